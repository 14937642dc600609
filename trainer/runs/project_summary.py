"""One line's worth of facts about a project, for listings: counts and the last run's status.

Cheap by design (directory scans and one small JSON read per project) so a projects list with many
projects opens instantly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.dataset.view import list_dataset
from loradeck.trainer.runs import lifecycle as runs


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
    damaged: bool = False        # no project.toml: listed with a repair or remove action

    def to_dict(self) -> dict:
        return asdict(self)


def last_run(project: Project) -> tuple[str | None, str | None]:
    """(run id, state) of the newest run as loradeck.trainer.runs.lifecycle sees it (running / completed / stopped /
    failed / crashed ...), or (None, None) without runs."""
    files = runs.latest_run(project)
    if files is None:
        return None, None
    try:
        return files.run_id, runs.run_info(files).state
    except Exception:  # one damaged run folder must not hide the project from the list
        return files.run_id, "unreadable"


def summarize(project: Project) -> ProjectSummary:
    """Counts and last run of `project`; a broken project.toml is reported, not raised."""
    problem = None
    try:
        s = settings.load(project.settings_file)
        base, trigger, ext = s.project.base_model, s.project.trigger_word, s.caption_extension
    except Exception as e:  # the listing must still show the project
        base, trigger, ext, problem = "?", "", ".txt", str(e).splitlines()[0] if str(e) else type(e).__name__
    damaged = not project.exists()
    if damaged:
        problem = "damaged: no project.toml"
    listing = list_dataset(project, ext)
    run_id, status = last_run(project)
    return ProjectSummary(project.name, listing.images, listing.captioned, listing.originals,
                          base, trigger, run_id, status, problem, damaged)
