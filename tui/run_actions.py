"""What the run screens ask of the engine: find, list, launch, stop, resume and export runs.

A thin layer over `trainer.runs.lifecycle` (and `trainer.lora.publish` for export) so the screens call one name
per action and every failure arrives as a LoradeckError the error modal can show. All of these
block (file reads, waiting for a run to stop): screens call them from worker threads.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from textual.worker import get_current_worker

from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.config.resolve import ResolvedConfig
from loradeck.trainer.config.user_config import load_user_config
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.gpu import processes as gpu_processes
from loradeck.trainer.lora import publish
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs import queue as run_queue
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.runs.lifecycle import RunInfo
from loradeck.trainer.runs.states import ACTIVE
from loradeck.trainer.slurm import settings as slurm_settings
from loradeck.tui.screens.export_dialog import DIALOG_WORDING


def find_run(project: Project, run_id: str | None) -> RunFiles | None:
    """The named run (an id or a unique prefix), or the latest when `run_id` is None; None if the
    project has no run yet."""
    if run_id is None:
        return runs.latest_run(project)
    return runs.find_run(project, run_id)


def list_runs(project: Project) -> list[RunInfo]:
    """Every run of the project, newest first."""
    return sorted(runs.list_runs(project), key=lambda r: (r.started or 0.0, r.run_id), reverse=True)


def launch(project: Project, config: dict[str, Any] | ResolvedConfig, *, gpu: str | None = None,
           queue: bool = False, slurm: bool = False) -> RunFiles:
    """Create a run and start it detached. `config` is overrides on the project's defaults, or a
    config the caller already resolved (loradeck.trainer.config.resolve: it is resolved once, here or
    there). `gpu` (None, "auto" or an index) places it, `queue` puts it in the queue instead
    (loradeck.trainer.runs.queue), and `slurm` submits it as a Slurm batch job ([slurm] settings of
    the user config and project.toml)."""
    batch = slurm_settings.for_project(project.settings_file) if slurm else None  # refused before a run exists
    where = gpu_processes.parse_gpu(gpu) if not slurm and (gpu is not None or queue) else None
    resolved = config if isinstance(config, ResolvedConfig) else run_config.resolve(project, config)
    if slurm:
        files = runs.create_run_from(project, resolved)
        try:
            runs.submit_to_slurm(files, batch)
        except BaseException:
            shutil.rmtree(files.dir, ignore_errors=True)  # only its config was written: nothing to keep
            raise
        return files
    if gpu is None and not queue:
        files = runs.create_run_from(project, resolved)
        runs.start(files)
        return files
    if queue:
        files = runs.create_run_from(project, resolved)
        run_queue.enqueue(project, files, gpu=where)
        return files
    chosen = gpu_processes.pick_gpus(resolved.config, where)  # before the run folder exists
    files = runs.create_run_from(project, resolved)
    with gpu_processes.child_env(gpu_processes.visible_env(chosen)):
        runs.start(files)
    return files


def slurm_available() -> bool:
    """Can runs be submitted to Slurm from here (sbatch on PATH)?"""
    return shutil.which("sbatch") is not None


def project_of(files: RunFiles) -> str:
    """The name of the project a run folder belongs to (<root>/<project>/runs/<run-id>)."""
    return files.dir.parent.parent.name


def stop_command(files: RunFiles, *, force: bool = False) -> str:
    """The complete, copy-pasteable `loradeck stop` of this run."""
    return command("stop", project_of(files), files.run_id, "--force" if force else None)


def stop(files: RunFiles, *, force: bool = False, timeout: float = 60.0) -> None:
    """Ask the run to stop and wait for it (it finishes the step and saves resumable state); a
    queued run is taken out of the queue.

    With `force`, a run still alive after `timeout` is killed: it then reads as crashed and resumes
    from its last saved state (the step it was finishing is lost)."""
    if runs.run_state(files) == "queued" and not files.slurm_record.is_file():
        run_queue.cancel(files)
        return
    report = runs.stop(files, timeout=timeout, force=force)
    if not report.get("ok", True):
        raise LoradeckError(f"run {files.run_id} did not stop within the wait (it is {report.get('state')})",
                            hint="it may still be saving: wait, or press s again to force-stop it"
                                 f" (from a shell: {stop_command(files, force=True)})")


def resume(files: RunFiles, *, exit_wait: float = 60.0) -> None:
    """Start a stopped, failed or crashed run again from its last saved state, detached.

    A trainer writes `run_finished` (so the run reads stopped / failed) before its process has
    exited. `loradeck.trainer.runs.lifecycle.stop` now waits for that exit, but r pressed as soon as the monitor shows
    `stopped` comes while that stop is still waiting (or after a run failed on its own, or was
    stopped from another terminal); the engine rightly refuses to start a second trainer on the
    folder meanwhile, so this waits up to `exit_wait` seconds for the old process to go first.
    """
    if runs.run_state(files) == "queued":  # an orphan (its waiter gone) gets a new waiter
        run_queue.requeue(files)
        return
    if runs.run_state(files) not in ACTIVE:
        deadline = time.monotonic() + exit_wait
        while runs.lingering_pid(files) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
    runs.resume(files, detach=True)


def export(project: Project, files: RunFiles, choice, *, on_event=None, should_stop=None) -> Any:
    """Validate and publish the run's final LoRA, or with `choice.checkpoint` (a step or "latest") one of
    its checkpoints, through the export engine (loradeck.trainer.lora.publish), as `choice.name` in `choice.folder`
    with `choice.on_conflict` (a loradeck.tui.screens.export_dialog.ExportChoice).

    The diffusers load check runs in a subprocess (isolate), so the TUI process never imports torch;
    its progress events go to `on_event`, and `should_stop` (the worker cancelled) ends that subprocess.
    The folder is remembered in project.toml [export] dest once something was exported to it.
    """
    result = publish.export_run(project.name, files.run_id, root=project.root, to=choice.folder or None,
                                name=choice.name or None, on_conflict=choice.on_conflict, isolate=True,
                                checkpoint=choice.checkpoint or None, to_source="the export dialog",
                                 wording=DIALOG_WORDING, on_event=on_event, should_stop=should_stop)
    if choice.folder:
        remember_export_folder(project, choice.folder)
    return result


def export_defaults(project: Project) -> tuple[str, str]:
    """(folder, on-conflict policy) the export dialog starts with: project.toml [export], else the
    user config; ("", "refuse") where neither says."""
    dest, policy = "", "refuse"
    try:
        section = settings.load(project.settings_file).export
        dest, policy = section.dest, section.on_conflict
    except LoradeckError:
        pass
    if not dest or policy == "refuse":
        try:
            user = load_user_config()
            dest = dest or (user.export_dest or "")
            policy = policy if policy != "refuse" else (user.on_conflict or "refuse")
        except LoradeckError:
            pass
    if dest and not os.path.isabs(os.path.expanduser(dest)):
        dest = str(project.path / dest)  # a relative project dest is relative to the project
    return str(dest), policy


def export_name(project: Project, run_id: str, checkpoint: str = "") -> str:
    """The name the run's LoRA (or checkpoint) is exported under by default (loradeck.trainer.lora.publish)."""
    return publish.export_name(project, run_id, checkpoint or None)


def remember_export_folder(project: Project, folder: str) -> None:
    """Save `folder` as the project's [export] dest, so the next export starts there. A relative dest
    in project.toml is relative to the project: an absolute path is stored."""
    path = os.path.abspath(os.path.expanduser(folder))
    try:
        if settings.load(project.settings_file).export.dest != path:
            settings.update(project.settings_file, "export", {"dest": path})
    except (LoradeckError, OSError):
        pass  # remembering is a convenience: the export itself succeeded


def has_checkpoints(project: Project, run_id: str) -> bool:
    """Does the run have intermediate LoRA files (exportable whatever its state)?"""
    return bool(publish.checkpoints_of(project.runs / run_id))


def watched_export(screen) -> dict[str, Any]:
    """For a screen's export worker (call it in the worker thread): the keyword arguments of
    loradeck.tui.run_actions.export that say each phase of the load check in a notice and end its
    subprocess when the worker is cancelled (the screen closed, the app quitting)."""
    worker = get_current_worker()

    def on_event(event: dict[str, Any]) -> None:
        if event.get("type") == "progress" and event.get("message"):
            screen.app.call_from_thread(screen.notify, f"validating: {event['message']}…")

    return {"on_event": on_event, "should_stop": lambda: worker.is_cancelled}
