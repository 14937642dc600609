"""Fitting text to terminal columns by display width, not by character count.

A wide character (日, ☕) takes two columns and a combining accent none, so `str.ljust` and
`len()` misplace everything after such a name. Every list and table that pads or cuts text
itself goes through these (Rich's cell functions underneath).
"""

from __future__ import annotations

from rich.cells import cell_len, set_cell_size

ELLIPSIS = "…"


def fit(text: str, width: int) -> str:
    """`text` cut or padded to exactly `width` columns; a cut ends with "…"."""
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    # set_cell_size pads with a space when it had to split a wide character; the ellipsis follows that.
    return set_cell_size(set_cell_size(text, width - 1).rstrip(" ") + ELLIPSIS, width) \
        if width > 1 else ELLIPSIS


def fit_right(text: str, width: int) -> str:
    """`text` right-aligned in exactly `width` columns (cut like `fit` when too long)."""
    size = cell_len(text)
    if size >= width:
        return fit(text, width)
    return " " * (width - size) + text
