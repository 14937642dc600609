"""The [slurm] settings a submission uses: user config < project.toml < command-line flags.

The schema (SlurmSettings, validate, merge) is loradeck.trainer.config.slurm_settings.
"""

from __future__ import annotations

from typing import Any

from loradeck.trainer.config import project_settings, user_config
from loradeck.trainer.config.slurm_settings import SlurmSettings, merge, validate


def for_project(settings_file, flags: dict[str, Any] | None = None) -> SlurmSettings:
    """The settings a submission of this project uses: user config < project.toml < `flags`."""
    flags = validate(flags or {}, "the command line")
    return merge(user_config.load_user_config().slurm, project_settings.load(settings_file).slurm, flags)
