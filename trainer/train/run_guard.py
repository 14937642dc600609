"""The trainer's check that its run folder is still there before it writes into it.

A project deleted under a live run (by hand, or before `loradeck delete` refused that) must not
come back: every save (state, checkpoint, sample, final LoRA) would otherwise `mkdir -p` its way
to `<project>/runs/<id>/...` again, leaving a folder without a project.toml. So before writing,
the trainer checks that its run folder exists and, when the run lives in its project's runs/
folder (the layout loradeck.trainer.runs.lifecycle makes), that the project still has its project.toml; if not, it
fails with an `io` error instead.
"""

from __future__ import annotations

from pathlib import Path

from loradeck.trainer.dataset.project import RUNS_DIR, SETTINGS_FILE
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs.files import RunFiles


class RunFolderGone(LoradeckError):
    """The run folder, or the project around it, was deleted while the trainer ran."""


def check_run_folder(files: RunFiles, project_dir: str | Path | None = None) -> None:
    """Raise RunFolderGone when `files.dir` is gone, or its project (in the standard layout) lost
    its project.toml. Two stat calls: cheap enough for every step."""
    if not files.dir.is_dir():
        raise RunFolderGone(f"the run folder {files.dir} is gone (was its project deleted?); nothing more is"
                            " written", hint="the trainer stops here and recreates nothing")
    if project_dir is None:
        return
    project = Path(project_dir)
    in_layout = files.dir.parent.name == RUNS_DIR and files.dir.parent.parent == project
    if in_layout and not (project / SETTINGS_FILE).is_file():
        raise RunFolderGone(f"project {project} has no {SETTINGS_FILE} any more (deleted?); the run stops"
                            " without writing into it", hint="restore the project, then resume the run")
