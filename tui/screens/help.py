"""Help: the keys of the screen underneath, their binding ids, and where to remap them."""

from __future__ import annotations

from dataclasses import replace

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen, Screen
from textual.widgets import DataTable, Static

from loradeck.tui.keys import DEFAULTS, keymap_path

INTRO = ("loradeck: train SD 1.x LoRA adapters. Projects → dataset (import, prep, captions) → train → "
         "monitor. Ctrl+P opens the command palette. Remap keys in {path} ([keys] id = \"key\").")


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,f1", "close", "Close", id="help.close")]

    def __init__(self, under: Screen):
        super().__init__()
        self.under = under

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="help-box"):
            yield Static("Help", classes="modal-title")
            yield Static(INTRO.format(path=keymap_path()), id="help-intro", markup=False)
            yield DataTable(id="help-keys", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Key", "Does", "Binding id")
        # Every binding of the screen and the app, including those disabled right now (cancel
        # while nothing runs), with the keys in force after the user's keymap.
        seen = set()
        for node in (self.under, self.app):
            for bindings in node._bindings.key_to_bindings.values():
                for b in bindings:
                    if b.id in DEFAULTS and b.id not in seen:
                        seen.add(b.id)
                        remapped = self.app._keymap.get(b.id)
                        if remapped:
                            b = replace(b, key=remapped.split(",")[0])
                        table.add_row(self.app.get_key_display(b), b.description, b.id)
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)
