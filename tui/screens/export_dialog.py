"""The export dialog: where to put a run's LoRA, under which name, which one, and what to do when
that name is taken.

Enter walks the fields (folder → name → checkpoint) and only the last one exports, so the name is
seen before anything is written. The choice is checked here first (folder exists, name allowed and
free, or "new version" chosen) and a problem is said under the fields; the engine checks again when
it writes (another artist may publish the same name meanwhile) and its hints then name these fields.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Select, Static

from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.lora.publish import check_name
from loradeck.trainer.lora.shared_folder import adapter_path
from loradeck.tui.keys import bind

# How the engine's hints name these fields (loradeck.trainer.lora.publish.CLI_WORDING has the CLI's names).
DIALOG_WORDING = {"name": "Name", "version": "\"If the name exists: new version\""}
ON_CONFLICT_CHOICES = [("refuse: keep the existing file", "refuse"),
                       ("new version: NAME-v2, -v3 …", "version")]


@dataclass
class ExportChoice:
    folder: str        # as typed, ~ expanded by the engine
    name: str          # the adapter name (no .safetensors)
    checkpoint: str    # "" = the final LoRA; a step number, or "latest"
    on_conflict: str   # "refuse" or "version"


def choice_problem(choice: ExportChoice) -> str | None:
    """What stops `choice` from being exported, in the dialog's words, or None."""
    if not choice.folder:
        return "type the folder to export to"
    folder = Path(os.path.expanduser(choice.folder))
    if not folder.is_dir():
        return f"{folder} does not exist or is not a folder: create it first, or choose another"
    if not choice.name:
        return "type a name for the LoRA"
    try:
        check_name(choice.name)
    except LoradeckError as e:
        return str(e)
    if choice.on_conflict == "refuse" and os.path.lexists(adapter_path(folder, choice.name)):
        return (f"{choice.name}.safetensors already exists there: change the Name, or set"
                " \"If the name exists\" to new version")
    return None


class ExportScreen(ModalScreen["ExportChoice | None"]):
    """Dismisses with an ExportChoice, or None when cancelled. `default_name(checkpoint)` gives the
    name the engine would use for that checkpoint ("" = the final LoRA); it may raise LoradeckError."""

    # One line per field (compact inputs), so the whole dialog, buttons included, fits 80x24.
    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    ExportScreen #export-box { width: 76; max-width: 100%; height: auto; border: round $accent; padding: 0 1; }
    ExportScreen .export-row { height: 1; margin: 1 0 0 0; }
    ExportScreen .export-label { width: 21; }
    ExportScreen .export-row Input, ExportScreen .export-row Select { width: 1fr; }
    ExportScreen #export-problem { height: auto; margin: 1 0 0 0; }
    ExportScreen .buttons { height: auto; margin: 1 0 0 0; }
    """
    BINDINGS = [bind("app.back")]

    def __init__(self, run_id: str, dest: str = "", checkpoint: str = "", *,
                 default_name: Callable[[str], str] | None = None, on_conflict: str = "refuse") -> None:
        super().__init__()
        self.run_id, self.dest, self.checkpoint = run_id, dest, checkpoint
        self.default_name = default_name or (lambda _checkpoint: "")
        self.on_conflict = on_conflict if on_conflict in dict((v, k) for k, v in ON_CONFLICT_CHOICES) else "refuse"
        self._shown_default = ""

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box"):
            yield Static(f"Export a LoRA of {self.run_id} (validated first)", classes="modal-title", markup=False)
            with Horizontal(classes="export-row"):
                yield Static("Folder", classes="export-label", markup=False)
                yield Input(self.dest, placeholder="a folder that exists, e.g. ~/loras", id="export-dest",
                            compact=True)
            with Horizontal(classes="export-row"):
                yield Static("Name", classes="export-label", markup=False)
                yield Input("", placeholder="without .safetensors", id="export-name", compact=True)
            with Horizontal(classes="export-row"):
                yield Static("Checkpoint", classes="export-label", markup=False)
                yield Input(self.checkpoint, placeholder="empty: the final LoRA; a step, or latest",
                            id="export-checkpoint", compact=True)
            with Horizontal(classes="export-row"):
                yield Static("If the name exists", classes="export-label", markup=False)
                yield Select(ON_CONFLICT_CHOICES, value=self.on_conflict, allow_blank=False, id="export-conflict",
                             compact=True)
            yield Static("Enter goes to the next field and exports from Checkpoint. The folder is"
                         " remembered for next time.", classes="hint", markup=False)
            yield Static("", id="export-problem", classes="form-error", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Export", id="export-ok", variant="primary")
                yield Button("Cancel", id="export-cancel")

    def on_mount(self) -> None:
        self._refresh_default_name(force=True)
        self.query_one("#export-dest", Input).focus()

    def _refresh_default_name(self, force: bool = False) -> None:
        """Fill the name with the engine's default for the checkpoint chosen, unless the user typed one."""
        field = self.query_one("#export-name", Input)
        try:
            default = self.default_name(self.query_one("#export-checkpoint", Input).value.strip())
        except LoradeckError as e:
            self._problem(e.one_line())
            return
        if force or field.value == self._shown_default:
            field.value = default
        self._shown_default = default

    @on(Input.Changed, "#export-checkpoint")
    def _checkpoint_changed(self) -> None:
        self._problem("")
        self._refresh_default_name()

    @on(Input.Changed, "#export-dest")
    @on(Input.Changed, "#export-name")
    @on(Select.Changed)
    def _edited(self) -> None:
        self._problem("")

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        # Enter goes on to the next field; only the last one exports (the name is seen first).
        if event.input.id == "export-checkpoint":
            self._finish(True)
        else:
            self.focus_next(Input)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self._finish(event.button.id == "export-ok")

    def choice(self) -> ExportChoice:
        return ExportChoice(
            folder=self.query_one("#export-dest", Input).value.strip(),
            name=self.query_one("#export-name", Input).value.strip(),
            checkpoint=self.query_one("#export-checkpoint", Input).value.strip(),
            on_conflict=str(self.query_one("#export-conflict", Select).value))

    def _problem(self, text: str) -> None:
        self.query_one("#export-problem", Static).update(text)

    def _finish(self, ok: bool) -> None:
        if not ok:
            self.dismiss(None)
            return
        choice = self.choice()
        problem = choice_problem(choice)
        if problem:
            self._problem(problem)
            return
        self.dismiss(choice)

    def action_back(self) -> None:
        self.dismiss(None)
