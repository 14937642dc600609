"""One line's worth of facts about a project, for listings: counts and the last run's status.

Cheap by design (directory scans and one small JSON read per project) so a projects list with many
projects opens instantly.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from trainer.dataset_view import list_dataset
from trainer.project import Project


@dataclass
class ProjectSummary:
    name: str
    images: int            # prepared images in dataset/
    captioned: int
    originals: int         # imported files in originals/
    base_model: str
    trigger_word: str
    last_run: str | None   # run id
    last_run_status: str | None  # running / completed / stopped / failed / crashed / ...
    problem: str | None = None   # e.g. an unreadable project.toml

    def to_dict(self) -> dict:
        return asdict(self)


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def last_run(project: Project) -> tuple[str | None, str | None]:
    """(run id, status) of the newest run, or (None, None). Uses trainer.runs when present."""
    try:
        from trainer import runs as runs_mod
    except ImportError:
        runs_mod = None
    if runs_mod is not None and hasattr(runs_mod, "list_runs"):
        try:
            found = list(runs_mod.list_runs(project))
        except Exception:
            found = []
        if found:
            newest = found[-1]
            info = newest if isinstance(newest, dict) else getattr(newest, "__dict__", {})
            run_id = info.get("run_id") or info.get("id") or getattr(newest, "run_id", None)
            status = info.get("status") or info.get("state") or getattr(newest, "status", None)
            if run_id:
                return str(run_id), str(status) if status else None
    return _last_run_from_files(project)


def _last_run_from_files(project: Project) -> tuple[str | None, str | None]:
    from trainer.run_files import RunFiles, read_status

    try:
        dirs = [e for e in os.scandir(project.runs) if e.is_dir() and not e.name.startswith(".")]
    except FileNotFoundError:
        return None, None
    if not dirs:
        return None, None
    newest = max(dirs, key=lambda e: (e.stat().st_mtime, e.name))
    status = read_status(RunFiles(project.runs / newest.name)) or {}
    state = status.get("state")
    if state in ("starting", "running", "stopping") and not _pid_alive(status.get("pid")):
        state = "crashed"
    return newest.name, state or "unknown"


def summarize(project: Project) -> ProjectSummary:
    """Counts and last run of `project`; a broken project.toml is reported, not raised."""
    from trainer import settings

    problem = None
    try:
        s = settings.load(project.settings_file)
        base, trigger, ext = s.project.base_model, s.project.trigger_word, s.caption_extension
    except Exception as e:  # the listing must still show the project
        base, trigger, ext, problem = "?", "", ".txt", str(e).splitlines()[0] if str(e) else type(e).__name__
    listing = list_dataset(project, ext)
    run_id, status = last_run(project)
    return ProjectSummary(project.name, listing.images, listing.captioned, listing.originals,
                          base, trigger, run_id, status, problem)
