"""A virtualised list of dataset images: only the visible lines are ever rendered.

DataTable re-measures its rows on every scroll, which made a 10 000-image dataset lag (~70 ms per
page); this draws each visible line on demand from the entry list (Textual's line API), so setting
10 000 rows and scrolling cost the same as 20.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from loradeck.trainer.dataset.view import CAPTIONED, EMPTY, IGNORED_EXTENSION, MISSING, DatasetEntry
from loradeck.tui.cells import fit, fit_right

_MARK = {CAPTIONED: ("●", "captioned"), IGNORED_EXTENSION: ("◐", "ignored ext"), MISSING: ("○", "missing"),
         EMPTY: ("○", "empty")}


class ImageList(ScrollView, can_focus=True):
    """Rows of (status mark, file name, status); arrow keys move the cursor, Enter chooses."""

    DEFAULT_CSS = """
    ImageList { height: 1fr; }
    """
    COMPONENT_CLASSES = {"image-list--cursor", "image-list--missing", "image-list--captioned",
                         "image-list--ignored-extension", "image-list--empty"}
    BINDINGS = [
        Binding("up", "move(-1)", show=False), Binding("down", "move(1)", show=False),
        Binding("pageup", "page(-1)", show=False), Binding("pagedown", "page(1)", show=False),
        Binding("home", "jump(0)", show=False), Binding("end", "jump(-1)", show=False),
        Binding("enter", "choose", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=True)

    @dataclass
    class Highlighted(Message):
        index: int
        entry: DatasetEntry | None

    @dataclass
    class Chosen(Message):
        index: int
        entry: DatasetEntry

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.entries: list[DatasetEntry] = []
        self._styles: dict = {}
        self._base_style = None

    def set_entries(self, entries: list[DatasetEntry], keep: str | None = None) -> None:
        """Show `entries`; the cursor stays on the image named `keep` when it is still listed."""
        self.entries = entries
        self.virtual_size = Size(self.size.width, len(entries))
        index = 0
        if keep is not None:
            index = next((i for i, e in enumerate(entries) if e.name == keep), 0)
        self.cursor = index
        self.refresh()

    @property
    def current(self) -> DatasetEntry | None:
        return self.entries[self.cursor] if 0 <= self.cursor < len(self.entries) else None

    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self.entries) - 1)) if self.entries else 0

    def watch_cursor(self, old: int, new: int) -> None:
        top, height = int(self.scroll_offset.y), self.scrollable_content_region.height or 1
        if new < top:
            self.scroll_to(y=new, animate=False)
        elif new >= top + height:
            self.scroll_to(y=new - height + 1, animate=False)
        self.refresh()
        self.post_message(self.Highlighted(new, self.current))

    def action_move(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, direction: int) -> None:
        self.cursor += direction * max(1, self.scrollable_content_region.height - 1)

    def action_jump(self, index: int) -> None:
        self.cursor = index if index >= 0 else len(self.entries) - 1

    def action_choose(self) -> None:
        if self.current is not None:
            self.post_message(self.Chosen(self.cursor, self.current))

    def on_click(self, event) -> None:
        row = int(self.scroll_offset.y) + event.y
        if 0 <= row < len(self.entries):
            if row == self.cursor and event.chain >= 2:
                self.action_choose()
            self.cursor = row

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, len(self.entries))

    def render_lines(self, crop):
        # Component styles are looked up once per paint, not once per line.
        self._styles = {name: self.get_component_rich_style(name, partial=name != "image-list--cursor")
                        for name in self.COMPONENT_CLASSES}
        self._base_style = self.rich_style
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        row = int(self.scroll_offset.y) + y
        base = self._base_style
        if row >= len(self.entries):
            return Strip.blank(width, base)
        entry = self.entries[row]
        mark, label = _MARK.get(entry.status, ("?", entry.status))
        status_style = self._styles.get(f"image-list--{entry.status.replace('_', '-')}") or base
        if row == self.cursor:
            base = base + self._styles["image-list--cursor"]
        # Padded and cut by display width (loradeck.tui.cells): a wide or accented name must not push the
        # status column, or leave cells of a longer line behind when the list is filtered.
        name_width = max(1, width - 15)
        segments = [
            Segment(f" {mark} ", base + status_style),
            Segment(fit(entry.name, name_width), base),
            Segment(fit_right(label, 11) + " ", base + status_style),
        ]
        return Strip(segments, width).crop(0, width).extend_cell_length(width, base)

