"""Before captioning: which model captions this project (project.toml [caption] model).

The field starts with the project's model (or the built-in default); what is chosen is saved back
to project.toml, so the CLI's `loradeck caption` uses it too, and passed to the task explicitly.
More choices for the captioning run go into CaptionChoice and this dialog, next to the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from loradeck.trainer.captions.blip_captioning import default_caption_model, project_caption_model
from loradeck.tui.keys import bind


@dataclass
class CaptionChoice:
    model: str  # a Hugging Face id, a local folder, or synthetic:blip-tiny


def model_problem(model: str) -> str | None:
    """Why `model` cannot be a captioning model, said before any process starts, or None."""
    if not model:
        return "type a model: a Hugging Face id or a local folder"
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model
    if looks_like_path:
        path = Path(os.path.expanduser(model))
        if not path.is_dir():
            return f"“{model}” is not a folder"
        if not (path / "config.json").is_file():
            return f"“{model}” has no config.json (a folder saved with save_pretrained is needed)"
    return None


class CaptionDialog(ModalScreen["CaptionChoice | None"]):
    """Dismisses with a CaptionChoice, or None when cancelled. `settings`: the project's Settings."""

    DEFAULT_CSS = """
    CaptionDialog #caption-problem { height: auto; }
    """
    BINDINGS = [bind("app.back")]

    def __init__(self, project_name: str, settings) -> None:
        super().__init__()
        self.project_name = project_name
        self.model = project_caption_model(settings)
        self.default = default_caption_model(settings)

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="caption-box"):
            yield Static(f"Caption {self.project_name}'s images that have no caption", classes="modal-title",
                         markup=False)
            yield Static("Model: a Hugging Face id, or a local folder (saved in project.toml [caption] model)",
                         markup=False)
            yield Input(self.model, placeholder=self.default, id="caption-model", select_on_focus=False)
            yield Static(f"default: {self.default}", classes="hint", markup=False)
            yield Static("", id="caption-problem", classes="form-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Caption", id="caption-ok", variant="primary")
                yield Button("Cancel", id="caption-cancel")

    def on_mount(self) -> None:
        self.query_one("#caption-model", Input).focus()

    @on(Input.Changed)
    def _edited(self) -> None:
        self.query_one("#caption-problem", Static).update("")

    @on(Input.Submitted)
    def _submitted(self) -> None:
        self._finish(True)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self._finish(event.button.id == "caption-ok")

    def _finish(self, ok: bool) -> None:
        if not ok:
            self.dismiss(None)
            return
        model = self.query_one("#caption-model", Input).value.strip()
        problem = model_problem(model)
        if problem:
            self.query_one("#caption-problem", Static).update(problem)
            return
        self.dismiss(CaptionChoice(model=model))

    def action_back(self) -> None:
        self.dismiss(None)
