"""What the run screens ask of the engine: find, list, launch, stop, resume and export runs.

A thin layer over `trainer.runs` (and `trainer.publish` for export) so the screens call one name
per action and every failure arrives as a LoradeckError the error modal can show. All of these
block (file reads, waiting for a run to stop): screens call them from worker threads.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from trainer import runs
from trainer.errors import LoradeckError
from trainer.project import Project
from trainer.run_files import RunFiles
from trainer.runs import RunInfo


def find_run(project: Project, run_id: str | None) -> RunFiles | None:
    """The named run (an id or a unique prefix), or the latest when `run_id` is None; None if the
    project has no run yet."""
    if run_id is None:
        return runs.latest_run(project)
    return runs.find_run(project, run_id)


def list_runs(project: Project) -> list[RunInfo]:
    """Every run of the project, newest first."""
    return sorted(runs.list_runs(project), key=lambda r: (r.started or 0.0, r.run_id), reverse=True)


def launch(project: Project, overrides: dict[str, Any]) -> RunFiles:
    """Create a run with `overrides` on the project's defaults and start it detached."""
    files = runs.create_run(project, overrides)
    runs.start(files)
    return files


def project_of(files: RunFiles) -> str:
    """The name of the project a run folder belongs to (<root>/<project>/runs/<run-id>)."""
    return files.dir.parent.parent.name


def stop_command(files: RunFiles, *, force: bool = False) -> str:
    """The complete, copy-pasteable `loradeck stop` of this run."""
    return (f"loradeck stop {shlex.quote(project_of(files))} {shlex.quote(files.run_id)}"
            + (" --force" if force else ""))


def stop(files: RunFiles, *, force: bool = False, timeout: float = 60.0) -> None:
    """Ask the run to stop and wait for it (it finishes the step and saves resumable state).

    With `force`, a run still alive after `timeout` is killed: it then reads as crashed and resumes
    from its last saved state (the step it was finishing is lost)."""
    report = runs.stop(files, timeout=timeout, force=force)
    if not report.get("ok", True):
        raise LoradeckError(f"run {files.run_id} did not stop within the wait (it is {report.get('state')})",
                            hint="it may still be saving: wait, or press s again to force-stop it"
                                 f" (from a shell: {stop_command(files, force=True)})")


def resume(files: RunFiles, *, exit_wait: float = 60.0) -> None:
    """Start a stopped, failed or crashed run again from its last saved state, detached.

    A trainer writes `run_finished` (so the run reads stopped / failed) before its process has
    exited. `trainer.runs.stop` now waits for that exit, but r pressed as soon as the monitor shows
    `stopped` comes while that stop is still waiting (or after a run failed on its own, or was
    stopped from another terminal); the engine rightly refuses to start a second trainer on the
    folder meanwhile, so this waits up to `exit_wait` seconds for the old process to go first.
    """
    if runs.run_state(files) not in runs.ACTIVE:
        deadline = time.monotonic() + exit_wait
        while runs.lingering_pid(files) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
    runs.resume(files, detach=True)


def export(project: Project, files: RunFiles, dest: str | None, checkpoint: str = "") -> Any:
    """Validate and publish the run's final LoRA, or with `checkpoint` (a step or "latest") one of its
    checkpoints, through the export engine (trainer.publish).

    `dest` empty uses the project's / user's configured destination. The diffusers load check runs
    in a subprocess (isolate), so the TUI process never imports torch.
    """
    from trainer import publish

    return publish.export_run(project.name, files.run_id, root=project.root, to=dest or None, isolate=True,
                              checkpoint=checkpoint or None, to_source="the export dialog")


def has_checkpoints(project: Project, run_id: str) -> bool:
    """Does the run have intermediate LoRA files (exportable whatever its state)?"""
    from trainer import publish

    return bool(publish.checkpoints_of(project.runs / run_id))
