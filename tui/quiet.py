"""Keep redraws down: every redraw is bytes over SSH. Animations are off app-wide (loradeck.tui.app); this
stops the cursors of text fields from blinking (a redraw twice a second, forever)."""

from __future__ import annotations

from textual.dom import DOMNode
from textual.widgets import Input, TextArea


def no_blinking(node: DOMNode) -> None:
    """Turn off cursor blinking in every text field under `node`."""
    for field in node.query(Input):
        field.cursor_blink = False
    for area in node.query(TextArea):
        area.cursor_blink = False
