"""Import a folder (or files) into a project: a path input with completion, progress, and a report
that lists every refused file with its reason."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.suggester import Suggester
from textual.widgets import Button, DataTable, Input, Label, ProgressBar, Static

from loradeck.trainer.dataset.project import Project
from loradeck.tui.messages import ImportDone, ImportProgress
from loradeck.tui.quiet import no_blinking
from loradeck.tui.worker_errors import ShowsWorkerErrors


class PathSuggester(Suggester):
    """Completes the last component of a path from the file system (folders end with '/')."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)

    async def get_suggestion(self, value: str) -> str | None:
        return complete_path(value)


def complete_path(value: str) -> str | None:
    """The first existing path that extends `value` (hidden entries only when asked for)."""
    if not value:
        return None
    expanded = os.path.expanduser(value)
    folder, partial = os.path.split(expanded)
    try:
        names = sorted(os.listdir(folder or "."))
    except OSError:
        return None
    for name in names:
        if name.startswith(partial) and name != partial and (partial.startswith(".") or not name.startswith(".")):
            full = os.path.join(folder, name)
            completed = value[: len(value) - len(partial)] + name
            return completed + "/" if os.path.isdir(full) else completed
    return None


class ImportScreen(ShowsWorkerErrors, ModalScreen[int]):
    """Dismisses with the number of files imported."""

    BINDINGS = [
        Binding("escape", "close", "Close / stop", id="import.close"),
        Binding("tab", "complete", "Complete path", id="import.complete", priority=True, show=False),
    ]

    def __init__(self, project: Project, initial: str = ""):
        super().__init__()
        self.project = project
        self.initial = initial
        self.imported = 0
        self._stop = threading.Event()
        self._importing = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="import-box"):
            yield Static(f"Import into {self.project.name}", classes="modal-title")
            yield Label("Folder or file: Tab completes, Enter imports (with .txt/.caption sidecars)",
                        id="import-help")
            yield Input(self.initial, placeholder="~/pictures/my-style/", id="import-path",
                        suggester=PathSuggester())
            yield ProgressBar(id="import-progress", show_eta=False)
            yield Static("", id="import-status", markup=False)
            yield DataTable(id="import-refused", cursor_type="row")
            with Horizontal(classes="buttons"):
                yield Button("Import", id="import-go", variant="primary")
                yield Button("Close", id="import-close")

    def on_mount(self) -> None:
        table = self.query_one("#import-refused", DataTable)
        # Fixed widths and rows as tall as their text: a long reason wraps instead of being cut.
        table.add_column("Refused file", width=22)
        table.add_column("Reason", width=44)
        table.display = False
        self.query_one("#import-progress").display = False
        self.query_one("#import-path", Input).focus()
        no_blinking(self)

    def action_complete(self) -> None:
        field = self.query_one("#import-path", Input)
        if self.focused is not field:
            self.focus_next()
            return
        completed = complete_path(field.value)
        if completed:
            field.value = completed
            field.cursor_position = len(completed)

    @on(Input.Submitted, "#import-path")
    @on(Button.Pressed, "#import-go")
    def start(self) -> None:
        if self._importing:
            return
        raw = self.query_one("#import-path", Input).value.strip()
        if not raw:
            self.query_one("#import-status", Static).update("type a folder or file path first")
            return
        path = Path(os.path.expanduser(raw))
        if not path.exists():
            self.query_one("#import-status", Static).update(f"{path} does not exist")
            return
        self._importing = True
        self._stop.clear()
        self.query_one("#import-go", Button).disabled = True
        bar = self.query_one("#import-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.query_one("#import-status", Static).update(f"importing {path} …")
        self._import(path)

    @work(thread=True, exclusive=True, group="import", exit_on_error=False, description="import")
    def _import(self, path: Path) -> None:
        from loradeck.trainer.dataset.formats import import_sources  # it loads PIL: only once an import starts

        def progress(done, total, name, problem=None):
            self.post_message(ImportProgress(done, total, name))

        try:
            # A folder, or a dataset description (imagefolder metadata, kohya dataset TOML).
            report = import_sources(self.project, [path], on_progress=progress, should_stop=self._stop.is_set)
        finally:
            self.app.call_from_thread(self._finished_running)
        self.post_message(ImportDone(report.to_dict()))

    def _finished_running(self) -> None:
        self._importing = False
        self.query_one("#import-go", Button).disabled = False

    def on_import_progress(self, message: ImportProgress) -> None:
        bar = self.query_one("#import-progress", ProgressBar)
        bar.update(total=message.total, progress=message.done)
        self.query_one("#import-status", Static).update(f"{message.done}/{message.total}  {message.item}")

    def on_import_done(self, message: ImportDone) -> None:
        report = message.report
        self.imported += len(report["imported"])
        parts = [f"imported {len(report['imported'])}",
                 f"duplicates {len(report['duplicates'])}",
                 f"refused {len(report['refused'])}"]
        if report.get("captions_imported"):
            parts.append(f"captions {len(report['captions_imported'])}")
        if report.get("renamed"):
            parts.append(f"renamed {len(report['renamed'])}")
        if report.get("stopped"):
            parts.append("stopped early")
        self.query_one("#import-status", Static).update(
            ", ".join(parts) + (".  Next: prep the images (p on the dataset screen)." if report["imported"] else "."))
        table = self.query_one("#import-refused", DataTable)
        table.clear()
        rows = [(source, reason) for source, reason in report["refused"]]
        rows += [(source, f"caption skipped: {why}") for source, why in report.get("captions_skipped", [])]
        for source, reason in rows:
            table.add_row(Text(Path(source).name), Text(reason), height=None)
        table.display = table.row_count > 0
        if table.row_count:
            table.focus()  # the reasons are what to read next
        else:
            self.query_one("#import-close", Button).focus()

    @on(Button.Pressed, "#import-close")
    def action_close(self) -> None:
        if self._importing:
            self._stop.set()  # stops after the current file; the report still arrives
            self.query_one("#import-status", Static).update("stopping after the current file …")
            return
        self.dismiss(self.imported)

