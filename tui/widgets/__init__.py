"""widgets of the loradeck TUI."""
