"""What to do with a damaged project (a folder with originals/, dataset/ or runs/ but no
project.toml): repair it (a fresh project.toml with default settings) or remove it."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class DamagedProjectScreen(ModalScreen[str | None]):
    """Dismisses with "repair", "remove", or None (cancel, the default)."""

    BINDINGS = [
        Binding("r", "choose('repair')", "Repair", id="damaged.repair"),
        Binding("d", "choose('remove')", "Remove", id="damaged.remove"),
        Binding("n,escape", "choose(None)", "Cancel", id="damaged.cancel"),
    ]

    def __init__(self, name: str, path: str):
        super().__init__()
        self.project_name, self.path = name, path

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="damaged-box"):
            yield Static(f"Project {self.project_name!r} is damaged: {self.path} has no project.toml.\n\n"
                         "Repair writes a project.toml with default settings and keeps every file; "
                         "remove deletes the folder.", id="damaged-question", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Repair (r)", id="repair", variant="primary")
                yield Button("Remove (d)", id="remove", variant="error")
                yield Button("Cancel (n)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None if event.button.id == "cancel" else event.button.id)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)
