"""The prep dialog (p on the dataset screen): the resolution to prepare the dataset at.

It starts at the project's [prep] resolution; the one chosen becomes the new [prep] resolution once
the prep runs (loradeck.trainer.dataset.prep remembers it, as `loradeck prep --resolution N` does), so the train
form's default resolution and `loradeck check` agree with the dataset.
"""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.dataset import prep
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import LoradeckError


def default_resolution(project: Project) -> int:
    """The project's [prep] resolution (512 when project.toml cannot be read: prep reports why)."""
    try:
        return settings.load(project.settings_file).prep.resolution
    except LoradeckError:
        return settings.PrepSection().resolution


def check_resolution(project: Project, text: str) -> tuple[int | None, str]:
    """(the resolution, "") or (None, why not), by prep's own rule (loradeck.trainer.dataset.prep.load_settings)."""
    try:
        value = int(text.strip())
    except ValueError:
        return None, "enter a whole number of pixels, e.g. 512"
    try:
        prep.load_settings(project, value)
    except LoradeckError as e:
        return None, e.one_line()
    return value, ""


class PrepDialog(ModalScreen["int | None"]):
    """Dismisses with the resolution to prep at, or None."""

    DEFAULT_CSS = """
    PrepDialog #prep-error { color: $error; height: auto; }
    PrepDialog Horizontal { height: auto; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="prep.cancel")]

    def __init__(self, project: Project) -> None:
        super().__init__()
        self.project = project

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="prep-box"):
            yield Static(f"Prep {self.project.name}", classes="modal-title", markup=False)
            yield Static("Resolution (px): images are resized to about this many pixels squared and"
                         " cropped to multiples of 8; captions are kept.", markup=False)
            yield Input(str(default_resolution(self.project)), id="prep-resolution", type="integer")
            yield Static("", id="prep-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Prep (enter)", id="prep-ok", variant="primary")
                yield Button("Cancel (esc)", id="prep-cancel")

    def on_mount(self) -> None:
        self.query_one("#prep-resolution", Input).focus()

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._finish()

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        _, why = check_resolution(self.project, event.value)
        self.query_one("#prep-error", Static).update(why)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "prep-ok":
            self._finish()
        else:
            self.dismiss(None)

    def _finish(self) -> None:
        value, why = check_resolution(self.project, self.query_one("#prep-resolution", Input).value)
        if value is None:
            self.query_one("#prep-error", Static).update(why)
            return
        self.dismiss(value)

    def action_cancel(self) -> None:
        self.dismiss(None)
