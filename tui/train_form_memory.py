"""The train form's last values per project, so a second run starts where the first was set up.

Kept in the project's engine folder (`.loradeck/train_form.json`), not in project.toml: these are
what the form showed last, not the project's defaults for `loradeck train`. Written atomically;
a missing, unreadable or outdated file is no memory (the form then starts from the defaults).
"""

from __future__ import annotations

import json
from typing import Any

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.config import train_config
from loradeck.trainer.dataset.project import Project

FILE_NAME = "train_form.json"


def path(project: Project):
    return project.state / FILE_NAME


def save(project: Project, values: dict[str, Any], preset: str) -> None:
    """Remember the form's values (TrainConfig field -> value) and its preset."""
    known = {k: v for k, v in values.items() if k in train_config.FIELD_NAMES}
    project.state.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path(project), json.dumps({"values": known, "preset": preset}, indent=1, sort_keys=True))


def load(project: Project) -> tuple[dict[str, Any], str | None]:
    """The remembered values (only fields TrainConfig still has) and preset; ({}, None) if none."""
    try:
        data = json.loads(path(project).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, None
    if not isinstance(data, dict) or not isinstance(data.get("values"), dict):
        return {}, None
    values = {k: v for k, v in data["values"].items() if k in train_config.FIELD_NAMES}
    preset = data.get("preset")
    return values, preset if isinstance(preset, str) else None
