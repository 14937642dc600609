"""screens of the loradeck TUI."""
