"""The preflight report of a project (loradeck.trainer.dataset.preflight): what would go wrong in a run."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import LoadingIndicator, Static

from loradeck.trainer.dataset.preflight import check, render
from loradeck.trainer.dataset.project import Project
from loradeck.tui.worker_errors import ShowsWorkerErrors

_STYLE = {"error": "bold red", "warning": "yellow", "ok": "bold green"}


def report_text(report: dict) -> Text:
    """The engine's rendering of the report, with errors and warnings coloured."""
    text = Text()
    for line in render(report).splitlines():
        head = line.split(":", 1)[0]
        style = _STYLE.get(head, "bold green" if line == "ok" else "")
        text.append(line + "\n", style=style)
    return text


class PreflightScreen(ShowsWorkerErrors, ModalScreen[None]):
    BINDINGS = [Binding("escape,enter,q", "close", "Close", id="preflight.close")]

    def __init__(self, project: Project):
        super().__init__()
        self.project = project
        self.report: dict | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="preflight-box"):
            yield Static(f"Preflight: {self.project.name}", classes="modal-title")
            yield LoadingIndicator(id="preflight-loading")
            with VerticalScroll(id="preflight-report"):
                yield Static("", id="preflight-text")

    def on_mount(self) -> None:
        self._check()

    @work(thread=True, exclusive=True, group="preflight", exit_on_error=False, description="preflight")
    def _check(self) -> None:
        try:
            report = check(self.project)
        except BaseException:
            self.app.call_from_thread(self.dismiss, None)
            raise
        self.app.call_from_thread(self._show, report)

    def _show(self, report: dict) -> None:
        self.report = report
        self.query_one("#preflight-loading").display = False
        self.query_one("#preflight-text", Static).update(report_text(report))
        self.query_one("#preflight-report").focus()

    def action_close(self) -> None:
        self.dismiss(None)
