"""The projects screen: every project under the root with its counts and last run; create, import,
delete, and the way into a project's dataset, training form and runs."""

from __future__ import annotations

from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static

from loradeck.trainer.dataset.project import Project, list_damaged, list_projects, repair_project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs import project_summary as summary
from loradeck.trainer.runs.live import delete_project, live_runs
from loradeck.trainer.runs.states import ENDED
from loradeck.tui import navigation
from loradeck.tui.keys import bind
from loradeck.tui.worker_errors import ShowsWorkerErrors

EMPTY_HINT = "No projects yet. Press n to create one (or run `loradeck demo` for a ready-made one)."


class ProjectsScreen(ShowsWorkerErrors, Screen):
    BINDINGS = [bind("projects.open"), bind("projects.new"), bind("projects.import"),
                bind("projects.delete"), bind("projects.train"), bind("projects.runs"),
                bind("projects.refresh")]

    def __init__(self, root: Path):
        super().__init__()
        self.root = root
        self.summaries: dict[str, dict] = {}
        self._select_next: str | None = None
        self._listed = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="projects", cursor_type="row", zebra_stripes=True)
        yield Static("", id="projects-hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#projects", DataTable)
        # Fixed widths: the table fits 80 columns and does not jump as rows arrive.
        table.add_column("Project", key="name", width=16)
        table.add_column("Images", key="images", width=11)
        table.add_column("Captioned", key="captioned", width=9)
        table.add_column("Last run", key="run", width=10)
        table.add_column("Base model", key="base", width=20)

    def on_screen_resume(self) -> None:
        # First show included (Textual resumes a screen when it is pushed): one listing, started
        # after the frame is painted so scanning big datasets never delays the first frame.
        # Summaries never raise, so this cannot loop on an error.
        self.call_after_refresh(self.refresh_projects)

    def action_refresh(self) -> None:
        self.refresh_projects()

    def refresh_projects(self, select: str | None = None) -> None:
        # A newer refresh cancels this one before it starts (exclusive), so the row to select is
        # kept on the screen, not in this call.
        if select:
            self._select_next = select
        self._refresh_worker()

    @work(thread=True, exclusive=True, group="projects-list", exit_on_error=False,
          description="reading projects")
    def _refresh_worker(self) -> None:
        try:
            projects = sorted(list_projects(self.root) + list_damaged(self.root), key=lambda p: p.name.lower())
            if not self.summaries:  # first listing: names at once, counts when they are read
                self.app.call_from_thread(self._fill_names, [p.name for p in projects])
            summaries = [summary.summarize(p).to_dict() for p in projects]
        except (OSError, LoradeckError) as e:  # shown in place: a modal would come back on every refresh
            why = e.one_line() if isinstance(e, LoradeckError) else f"cannot read {self.root}: {e.strerror or e}"
            self.app.call_from_thread(self.query_one("#projects-hint", Static).update, why)
            return
        self.app.call_from_thread(self._fill, summaries)

    def _fill_names(self, names: list[str]) -> None:
        table = self.query_one("#projects", DataTable)
        if table.row_count or self.summaries:
            return
        for name in names:
            table.add_row(name, "…", "…", "…", "…", key=name)

    def _fill(self, summaries: list[dict]) -> None:
        table = self.query_one("#projects", DataTable)
        select, self._select_next = self._select_next, None
        current = select or self.selected_name()
        if self._listed and summaries == list(self.summaries.values()) and table.row_count == len(summaries):
            if select in self.summaries:
                table.move_cursor(row=list(self.summaries).index(select))
            return  # nothing changed: no redraw (and no flicker)
        table.clear()
        self._listed = True  # the first listing always fills the hint, even of an empty root
        self.summaries = {s["name"]: s for s in summaries}
        for s in summaries:
            unprepared = s["originals"] - s["images"]
            images = f"{s['images']} (+{unprepared})" if unprepared > 0 else f"{s['images']}"
            run = f"{s['last_run_status']}" if s["last_run"] else "–"
            base = s["problem"] and f"! {s['problem']}" or s["base_model"]
            table.add_row(s["name"], images, f"{s['captioned']}/{s['images']}", run, base, key=s["name"])
        names = [s["name"] for s in summaries]
        if current in names:
            table.move_cursor(row=names.index(current))
        hint = EMPTY_HINT if not summaries else f"{len(summaries)} project(s) in {self.root}  ·  Enter opens"
        if any(s["originals"] > s["images"] for s in summaries):
            hint += "  ·  (+N): imported, not prepared yet"
        if any(s.get("damaged") for s in summaries):
            hint += "  ·  damaged: enter to repair or remove"
        self.query_one("#projects-hint", Static).update(hint)

    def selected_name(self) -> str | None:
        table = self.query_one("#projects", DataTable)
        if table.row_count == 0:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    def selected(self) -> Project | None:
        name = self.selected_name()
        if name is None:
            self.notify("no project selected: press n to create one", severity="warning")
            return None
        return Project(self.root, name)

    @on(DataTable.RowSelected, "#projects")
    def _row_chosen(self) -> None:
        self.action_open()

    def _usable(self) -> Project | None:
        """The selected project; a damaged one offers its repair/remove dialog instead."""
        project = self.selected()
        if project and self.summaries.get(project.name, {}).get("damaged"):
            self._offer_repair(project)
            return None
        return project

    def action_open(self) -> None:
        project = self._usable()
        if project:
            self.app.open_dataset(project)

    def _offer_repair(self, project: Project) -> None:
        def chosen(choice: str | None) -> None:
            if choice == "repair":
                self._repair(project)
            elif choice == "remove":
                self.action_delete()

        self.app.push_screen(navigation.screen("damaged_project", project.name, str(project.path)), chosen)

    @work(thread=True, exclusive=True, group="projects-repair", exit_on_error=False,
          description="repairing project")
    def _repair(self, project: Project) -> None:
        repair_project(project.name, project.root)
        self.app.call_from_thread(self.notify, f"repaired {project.name}: a fresh project.toml with defaults")
        self.app.call_from_thread(self.refresh_projects, project.name)

    def action_new(self) -> None:
        def created(name: str | None) -> None:
            if name:
                self.notify(f"created project {name}")
                self.refresh_projects(select=name)

        self.app.push_screen(navigation.screen("new_project", self.root), created)

    def action_import_folder(self) -> None:
        project = self._usable()
        if project:
            self.app.push_screen(navigation.screen("import", project), lambda _: self.refresh_projects())

    def action_delete(self) -> None:
        project = self.selected()
        if project:
            self._check_live_then_confirm(project)

    @work(thread=True, exclusive=True, group="projects-delete", exit_on_error=False,
          description="checking for live runs")
    def _check_live_then_confirm(self, project: Project) -> None:
        self._ask_stop_or_delete(project)

    def _ask_stop_or_delete(self, project: Project) -> None:
        """(worker thread) The next question: stop its live runs, or delete it."""
        live = live_runs(project)
        if live:
            self.app.call_from_thread(self._offer_stop, project, live)
        else:
            self.app.call_from_thread(self._confirm_delete, project)

    def _offer_stop(self, project: Project, live: list) -> None:
        """A project with live runs is not deleted: name them and offer to stop them first."""
        names = "\n".join(f"  {r.describe()}" for r in live)
        question = (f"Project {project.name!r} cannot be deleted: {len(live)} run(s) still live:\n{names}\n\n"
                    "Stop them first? Each finishes its step and saves its state; then you are asked"
                    " again about the delete.")

        def answered(yes: bool | None) -> None:
            if yes:
                self._stop_then_confirm(project, live)

        self.app.push_screen(navigation.screen("confirm", question, yes_label="Stop runs"), answered)

    @work(thread=True, exclusive=True, group="projects-delete", exit_on_error=False,
          description="stopping runs")
    def _stop_then_confirm(self, project: Project, live: list) -> None:
        for run in live:
            self.app.call_from_thread(self.notify, f"stopping run {run.run_id}…")
            try:  # a trainer that already reads as ended but is still alive (hung) is killed
                runs.stop(run.files, timeout=60.0, force=run.state in ENDED)
            except LoradeckError:
                pass  # it ended on its own meanwhile; the check below decides
        self._ask_stop_or_delete(project)

    def _confirm_delete(self, project: Project) -> None:
        s = self.summaries.get(project.name, {})
        question = (f"Delete project {project.name!r}?\n\nThis removes {project.path} with its "
                    f"{s.get('originals', 0)} original(s), {s.get('images', 0)} prepared image(s), "
                    f"captions and runs. It cannot be undone.")

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(project)

        self.app.push_screen(navigation.screen("confirm", question, yes_label="Delete", danger=True), answered)

    @work(thread=True, exclusive=True, group="projects-delete", exit_on_error=False,
          description="deleting project")
    def _delete(self, project: Project) -> None:
        delete_project(project)
        self.app.call_from_thread(self.notify, f"deleted project {project.name}")
        self.app.call_from_thread(self.refresh_projects)

    def action_train(self) -> None:
        project = self._usable()
        if project:
            self.app.open_train(project)

    def action_runs(self) -> None:
        project = self._usable()
        if project:
            self.app.open_runs(project)
