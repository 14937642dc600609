"""Which captioner the dataset screen's Caption action runs: BLIP sentences or WD14 booru tags."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

CHOICES = ("blip", "wd14")


class CaptionChoiceScreen(ModalScreen[str | None]):
    """Dismisses with "blip", "wd14", or None (Esc). Enter takes the focused button (BLIP first)."""

    BINDINGS = [
        Binding("b", "choose('blip')", "BLIP", id="caption_choice.blip"),
        Binding("w", "choose('wd14')", "WD14 tags", id="caption_choice.wd14"),
        Binding("escape", "choose(None)", "Cancel", id="caption_choice.cancel"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="caption-choice-box"):
            yield Static("Caption images without a caption with:\n"
                         "BLIP: a sentence per image (photos, general subjects)\n"
                         "WD14: booru tags (anime, illustration; settings: [tagger] in project.toml)",
                         id="caption-choice-text", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("BLIP (b)", id="blip", variant="primary")
                yield Button("WD14 tags (w)", id="wd14")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#blip", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id if event.button.id in CHOICES else None)

    def action_choose(self, choice: str | None) -> None:
        self.dismiss(choice)
