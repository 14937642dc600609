"""Ask what to do when a caption changed on disk while it had unsaved edits here."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConflictScreen(ModalScreen[str]):
    """Dismisses with "reload" (take the file on disk), "keep" (write ours over it) or "later"."""

    BINDINGS = [
        Binding("r", "choose('reload')", "Reload from disk", id="conflict.reload"),
        Binding("k", "choose('keep')", "Keep mine", id="conflict.keep"),
        Binding("escape", "choose('later')", "Decide later", id="conflict.later"),
    ]

    def __init__(self, file_name: str, disk_text: str | None, our_text: str):
        super().__init__()
        self.file_name, self.disk_text, self.our_text = file_name, disk_text, our_text

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="conflict-box"):
            yield Static(f"{self.file_name} changed on disk", classes="modal-title")
            yield Static("Someone else changed this caption while you were editing it. "
                         "Nothing has been overwritten.", markup=False)
            yield Static("On disk:", classes="hint")
            yield Static(self.disk_text if self.disk_text is not None else "(file deleted)",
                         id="conflict-disk", markup=False)
            yield Static("Yours:", classes="hint")
            yield Static(self.our_text or "(empty)", id="conflict-ours", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Reload (r)", id="reload", variant="primary")
                yield Button("Keep mine (k)", id="keep", variant="warning")
                yield Button("Later (esc)", id="later")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id)

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)
