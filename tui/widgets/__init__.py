"""Widgets of the loradeck TUI: charts, tables and small controls the screens compose.

May import: what the tui package may; never a screen module."""
