"""The import index: `.loradeck/import_index.json`, mapping content hashes to the project's originals.

It records where each original came from (its source path, or a kohya dataset TOML's `num_repeats`),
so duplicates are recognised on import and repeat folders are read back at run creation
(loradeck.trainer.dataset.repeat_folders). It is rebuilt from originals/ when files were added or
removed by hand.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import LoradeckError

INDEX_NAME = "import_index.json"


def index_path(project: Project) -> Path:
    return project.state / INDEX_NAME


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def visible_files(folder: Path) -> list[Path]:
    """The plain, not hidden files directly in `folder` (none when it does not exist)."""
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]


def load_index(project: Project) -> dict[str, dict]:
    """sha256 -> {"file": name in originals/, "source": where it came from}, matching originals/ now."""
    try:
        raw = json.loads(index_path(project).read_text(encoding="utf-8")).get("files", {})
        entries = raw if isinstance(raw, dict) else {}
    except (OSError, ValueError, AttributeError):
        entries = {}
    present = {p.name for p in visible_files(project.originals)}
    index = {sha: e for sha, e in entries.items() if isinstance(e, dict) and e.get("file") in present}
    known = {e["file"] for e in index.values()}
    for name in sorted(present - known):  # added by hand (or the index was lost): hash them now
        path = project.originals / name
        try:
            index.setdefault(sha256_bytes(path.read_bytes()), {"file": name, "source": None})
        except OSError:
            continue
    return index


def save_index(project: Project, index: dict[str, dict]) -> None:
    try:
        project.state.mkdir(parents=True, exist_ok=True)
        atomic_write_text(index_path(project), json.dumps({"version": 1, "files": index}, ensure_ascii=False,
                                                          indent=0))
    except OSError as e:  # the originals are safe; the index is rebuilt from them next time
        raise LoradeckError(f"could not save {index_path(project)}: {e.strerror or e}") from None
