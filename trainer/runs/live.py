"""Which of a project's runs are live, and refusing what must not happen under a live run.

"Live" is any run state that is not terminal, so a state added later (queued, submitted to a
cluster scheduler) counts without a change here; a run that reads as crashed or finished while its
trainer process is still alive (hung, or still exiting) counts too. Deleting a project under a live
run would leave its trainer writing into a deleted folder, so deleting a project lives here.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from loradeck.trainer.cli_hint import command
from loradeck.trainer.dataset.project import Project, is_damaged
from loradeck.trainer.errors import ProjectError
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.states import ENDED


@dataclass(frozen=True)
class LiveRun:
    run_id: str
    state: str              # as loradeck.trainer.runs.lifecycle reads it; "crashed" with a pid means hung or exiting
    pid: int | None         # a trainer process still alive, when one is known
    files: runs.RunFiles

    def describe(self) -> str:
        alive = f", pid {self.pid} still alive" if self.pid and self.state in ENDED else ""
        return f"{self.run_id} ({self.state}{alive})"

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "state": self.state, "pid": self.pid}


def live_runs(project: Project) -> list[LiveRun]:
    """The project's runs whose state is not terminal or whose trainer is still alive, oldest first."""
    found = []
    for files in runs.run_folders(project):
        try:
            state = runs.run_state(files)
            pid = runs.lingering_pid(files)
            # `starting` with no launch record and no status: created, never launched (a launch that
            # failed). No process can write into it. (A queued state is not `starting`: it counts.)
            never_launched = state == "starting" and pid is None and \
                runs.read_launch(files) is None and runs.read_status(files) is None
        except Exception:  # an unreadable run folder: its process, if any, is unknowable here
            continue
        if never_launched:
            continue
        if state not in ENDED or pid is not None:
            found.append(LiveRun(files.run_id, state, pid, files))
    return found


def stop_command(project: Project, run: LiveRun) -> str:
    """The complete command that stops `run` (with --force for one that already reads as ended)."""
    return command("stop", project.name, run.run_id, *(["--force"] if run.state in ENDED else []))


class ProjectBusy(ProjectError):
    """An action refused because the project has live runs (`runs` lists them)."""

    def __init__(self, message: str, *, hint: str | None = None, live: list[LiveRun] = ()):
        super().__init__(message, hint=hint)
        self.runs = list(live)


def refuse_if_busy(project: Project, *, doing: str = "delete") -> None:
    """Raise ProjectBusy naming every live run of `project` and the commands that stop them."""
    live = live_runs(project)
    if not live:
        return
    names = ", ".join(r.describe() for r in live)
    stops = "; ".join(stop_command(project, r) for r in live)
    raise ProjectBusy(f"cannot {doing} project {project.name!r}: {len(live)} run(s) still live: {names}",
                      hint=f"stop first with: {stops}", live=live)


def delete_project(project: Project) -> None:
    """Remove a whole project folder (a damaged one too). Callers confirm with the user first.

    Refused (ProjectBusy, naming the runs and the commands that stop them) while any of its runs is
    live: its trainer would go on writing into a deleted folder.
    """
    if not project.exists() and not is_damaged(project):
        raise ProjectError(f"no project {project.name!r} in {project.root}")
    refuse_if_busy(project, doing="delete")
    trash = project.root / f".{project.name}.deleting"
    project.path.rename(trash)  # atomic disappearance from listings, then the slow part
    shutil.rmtree(trash)
