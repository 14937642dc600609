"""A checkbox that reads `[x]` ticked and `[ ]` unticked, so its state survives a terminal without colour
(Textual's Checkbox draws the same `▐X▌` glyph both ways and tells them apart by colour only)."""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Checkbox


class TickBox(Checkbox):
    DEFAULT_CSS = """
    TickBox > .toggle--button { background: transparent; color: $text-muted; }
    TickBox.-on > .toggle--button { background: transparent; color: $success; text-style: bold; }
    """

    @property
    def _button(self) -> Content:
        style = self.get_visual_style("toggle--button")
        return Content.assemble("[", ("x" if self.value else " ", style), "]")
