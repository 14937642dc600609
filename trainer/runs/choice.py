"""Which run a command means when the user names none: `loradeck stop cats`, `monitor cats`, ...

The project's one active run (queued, starting, running or stopping), else its newest run. Two or more active runs
are ambiguous: the command lists them and asks for the id instead of guessing which to stop.
The caller says which run it picked (`says_which`), on stderr and in its --json result.
"""

from __future__ import annotations

import sys

from loradeck.trainer import cli_hint
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.runs.states import LIVE


def choose_run(project: Project, run_id: str | None, command: str) -> tuple[RunFiles, str | None]:
    """(the run, why it was picked) for `loradeck COMMAND PROJECT [RUN]`; `why` is None when the
    user named the run. Raises LoradeckError when there is no run, or several active ones."""
    if run_id:
        return runs.find_run(project, run_id), None
    infos = runs.list_runs(project)
    if not infos:
        raise LoradeckError(f"project {project.name!r} has no runs",
                            hint=f"start one with: {cli_hint.command('train', project.name)}")
    active = [info for info in infos if info.state in LIVE]
    if len(active) == 1:
        return active[0].files, f"the only active run of {project.name}"
    if len(active) > 1:
        listed = ", ".join(f"{info.run_id} ({info.state})" for info in active)
        raise LoradeckError(f"project {project.name!r} has {len(active)} active runs: {listed}; say which",
                            hint=cli_hint.command(command, project.name) + " RUN_ID")
    newest = infos[-1]
    return newest.files, f"the newest run of {project.name} ({newest.state}; none is active)"


def says_which(files: RunFiles, why: str | None) -> None:
    """The stderr line naming a run the user did not name (nothing when they did)."""
    if why:
        print(f"run {files.run_id}: {why}", file=sys.stderr)
