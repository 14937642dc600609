"""Whether a screen is seen: screens that poll skip their work while another screen covers them."""

from __future__ import annotations

from textual.screen import Screen


def visible(screen: Screen) -> bool:
    """On top, or right under a modal dialog (Screen.is_current also counts any screen below)."""
    top = screen.app.screen
    return top is screen or (top.is_modal and screen.app.screen_stack[-2:-1] == [screen])
