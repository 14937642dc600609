"""The screens of the loradeck TUI: one module per screen; they open each other by name (tui.navigation).

May import: what the tui package may, and tui's own non-screen modules; never another screen module."""
