"""The one error display: a modal with the one-line message, the hint, and details on request."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ErrorScreen(ModalScreen[None]):
    """Shows `message` (and `hint`, `details`); Enter or Escape closes it."""

    BINDINGS = [Binding("escape,enter", "dismiss_error", "Close", id="error.close")]

    def __init__(self, title: str, message: str, hint: str | None = None, details: str | None = None):
        super().__init__()
        self.error_title, self.message, self.hint, self.details = title, message, hint, details

    def compose(self) -> ComposeResult:
        with Vertical(id="error-box", classes="modal-box"):
            yield Static(self.error_title, classes="modal-title", id="error-title")
            yield Static(self.message, id="error-message", markup=False)
            if self.hint:
                yield Static(f"hint: {self.hint}", id="error-hint", markup=False)
            if self.details:
                with VerticalScroll(id="error-details"):
                    yield Static(self.details, markup=False)
            yield Button("Close", id="error-close", variant="error")

    def on_mount(self) -> None:
        self.query_one("#error-close", Button).focus()

    def on_button_pressed(self) -> None:
        self.dismiss(None)

    def action_dismiss_error(self) -> None:
        self.dismiss(None)
