"""Create a project: name, trigger word, base model."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from loradeck.trainer.config.project_settings import ProjectSection
from loradeck.trainer.dataset.project import create_project
from loradeck.trainer.errors import LoradeckError
from loradeck.tui.quiet import no_blinking


class NewProjectScreen(ModalScreen[str | None]):
    """Dismisses with the new project's name, or None when cancelled."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="new.cancel")]

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="new-box"):
            yield Static("New project", classes="modal-title")
            yield Label("Name")
            yield Input(placeholder="e.g. my-style", id="new-name")
            yield Label("Trigger word (optional)")
            yield Input(placeholder="e.g. zxq style", id="new-trigger")
            yield Label("Base model (HF id, folder, .safetensors or synthetic:tiny)")
            yield Input(ProjectSection().base_model, id="new-base")
            yield Static("", id="new-error", classes="form-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Create", id="create", variant="primary")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#new-name", Input).focus()
        no_blinking(self)

    @on(Input.Submitted)
    def _next_field(self, event: Input.Submitted) -> None:
        if event.input.id == "new-base":
            self._create()
        else:
            self.focus_next()

    @on(Button.Pressed, "#create")
    def _create(self) -> None:
        name = self.query_one("#new-name", Input).value.strip()
        trigger = self.query_one("#new-trigger", Input).value.strip()
        base = self.query_one("#new-base", Input).value.strip()
        try:
            create_project(name, self.root, trigger_word=trigger, base_model=base or None)
        except LoradeckError as e:
            self.query_one("#new-error", Static).update(e.one_line())
            return
        except OSError as e:
            self.query_one("#new-error", Static).update(f"cannot create {name!r}: {e.strerror or e}")
            return
        self.dismiss(name)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
