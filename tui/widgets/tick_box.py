"""A checkbox that reads ticked or not without colour: `▐X▌` when on, `▐ ▌` when off.

Textual's Checkbox draws the same X either way and tells them apart by colour only, which a
monochrome terminal, a screen reader's text dump or a colour-blind user loses.
"""

from __future__ import annotations

from textual.widgets import Checkbox


class TickBox(Checkbox):
    """A Checkbox whose mark is drawn only when it is ticked."""

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - Textual's name for the mark between the brackets
        return "X" if self.value else " "
