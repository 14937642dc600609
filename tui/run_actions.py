"""What the run screens ask of the engine: find, list, launch, stop, resume and export runs.

A thin layer over `trainer.runs` (and `trainer.publish` for export) so the screens call one name
per action and every failure arrives as a LoradeckError the error modal can show. Blocking calls:
screens run them in worker threads.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.errors import LoradeckError
from trainer.events import iter_file
from trainer.project import Project
from trainer.run_files import RunFiles

from tui.run_watch import run_state


def _engine(module: str, what: str):
    try:
        return importlib.import_module(f"trainer.{module}")
    except ImportError as e:
        if e.name != f"trainer.{module}":
            raise
        raise LoradeckError(f"{what} is not available yet (trainer/{module}.py is missing)") from None


def _files(run: Any) -> RunFiles:
    """RunFiles from whatever the engine hands back (RunFiles, RunInfo with .files/.dir, a path)."""
    if isinstance(run, RunFiles):
        return run
    for attr in ("files", "run_files"):
        if isinstance(getattr(run, attr, None), RunFiles):
            return getattr(run, attr)
    if isinstance(getattr(run, "dir", None), (str, Path)):
        return RunFiles(Path(run.dir))
    if isinstance(run, (str, Path)):
        return RunFiles(Path(run))
    raise TypeError(f"not a run: {run!r}")


@dataclass(frozen=True)
class RunRow:
    """One line of the runs table."""

    run_id: str
    state: str
    step: int
    total_steps: int
    started: float | None
    output: str | None
    files: RunFiles


def run_dirs(project: Project) -> list[RunFiles]:
    if not project.runs.is_dir():
        return []
    return [RunFiles(d) for d in sorted(project.runs.iterdir()) if d.is_dir() and not d.name.startswith(".")]


def find_run(project: Project, run_id: str | None) -> RunFiles | None:
    """The named run, or the latest when `run_id` is None; None if the project has no run."""
    try:
        engine = importlib.import_module("trainer.runs")
    except ImportError:
        engine = None
    if run_id is None:
        if engine is not None and hasattr(engine, "latest_run"):
            latest = engine.latest_run(project)
            return None if latest is None else _files(latest)
        dirs = run_dirs(project)
        return max(dirs, key=lambda f: (f.dir.stat().st_mtime, f.run_id)) if dirs else None
    if engine is not None and hasattr(engine, "find_run"):
        return _files(engine.find_run(project, run_id))
    files = RunFiles(project.run_dir(run_id))
    if not files.dir.is_dir():
        raise LoradeckError(f"no run {run_id!r} in project {project.name!r}",
                            hint=f"list them with: loradeck runs {project.name}")
    return files


def _summary(files: RunFiles) -> tuple[int, int, float | None, str | None]:
    """(last step, total steps, start time, output) from the events file, for runs the engine can't list."""
    step = total = 0
    started = output = None
    try:
        for event in iter_file(files.events):
            kind = event.get("type")
            if kind == "run_started" and started is None:
                started = event.get("time")
            elif kind == "step":
                step, total = int(event.get("step") or 0), int(event.get("total_steps") or total)
            elif kind == "run_finished":
                output = event.get("output") or output
    except OSError:
        pass
    return step, total, started, output


def list_runs(project: Project) -> list[RunRow]:
    """Every run of the project, newest first."""
    try:
        engine = importlib.import_module("trainer.runs")
    except ImportError:
        engine = None
    rows = []
    if engine is not None and hasattr(engine, "list_runs"):
        for info in engine.list_runs(project):
            files = _files(info)
            state = getattr(info, "state", None)
            rows.append(RunRow(
                run_id=getattr(info, "run_id", files.run_id),
                state=getattr(state, "value", state) or run_state(files),
                step=int(getattr(info, "step", 0) or 0), total_steps=int(getattr(info, "total_steps", 0) or 0),
                started=getattr(info, "started", None), output=_str_or_none(getattr(info, "output", None)),
                files=files))
    else:
        for files in run_dirs(project):
            step, total, started, output = _summary(files)
            rows.append(RunRow(files.run_id, run_state(files), step, total, started, output, files))
    rows.sort(key=lambda r: (r.started or r.files.dir.stat().st_mtime, r.run_id), reverse=True)
    return rows


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def launch(project: Project, overrides: dict[str, Any]) -> RunFiles:
    """Create a run with `overrides` on the project's defaults and start it detached."""
    engine = _engine("runs", "launching runs")
    files = _files(engine.create_run(project, overrides))
    engine.start(files)
    return files


def stop(files: RunFiles) -> None:
    """Ask the run to stop (it saves resumable state first)."""
    _engine("runs", "stopping runs").stop(files)


def resume(files: RunFiles) -> None:
    """Start a stopped, failed or crashed run again from its last saved state, detached."""
    _engine("runs", "resuming runs").resume(files, detach=True)


def export(project: Project, files: RunFiles, dest: str | None) -> Any:
    """Validate and publish the run's final LoRA through the export engine (trainer.publish).

    `dest` None uses the project's / user's configured destination. The diffusers load check runs
    in a subprocess (isolate), so the TUI process never imports torch.
    """
    publish = _engine("publish", "export")
    return publish.export_run(project.name, files.run_id, root=project.root, to=dest or None, isolate=True)
