"""Preview of one image in the terminal.

Modes: `kitty` (terminal graphics protocol) and `sixel` through textual-image where the terminal
supports them, `halfblock` (two coloured pixels per cell with "▀", works in any true-colour terminal,
over SSH and in tmux) and `text` (no pixels: name, size, mode).

textual-image asks the terminal about its abilities when it is imported, which only works before
Textual takes over stdin, and costs start-up time; so the mode is chosen from the environment by
`detect_mode()` and textual-image is imported (by `prepare_graphics()`) only when a graphics mode was
chosen. `$LORADECK_PREVIEW` forces a mode.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.cells import cell_len
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.app import ComposeResult
from textual.containers import Container
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from loradeck.tui.worker_errors import ShowsWorkerErrors

MODES = ("kitty", "sixel", "halfblock", "text")
_graphics_ready: set[str] = set()


def detect_mode(env: dict | None = None) -> str:
    """The best preview mode for this terminal, from the environment only (no terminal query)."""
    env = os.environ if env is None else env
    forced = env.get("LORADECK_PREVIEW", "").strip().lower()
    if forced in MODES:
        return forced
    if env.get("TMUX") or env.get("STY"):
        return "halfblock"  # multiplexers do not pass graphics through by default
    term, program = env.get("TERM", ""), env.get("TERM_PROGRAM", "")
    if "kitty" in term or env.get("KITTY_WINDOW_ID") or program == "ghostty":
        return "kitty"
    if program in ("WezTerm", "iTerm.app", "mintty") or term in ("foot", "foot-extra", "mlterm", "contour"):
        return "sixel"
    return "halfblock"


def prepare_graphics(mode: str) -> str:
    """Import textual-image for a graphics mode before the app starts; falls back to halfblock."""
    if mode not in ("kitty", "sixel"):
        return mode
    try:
        import textual_image.widget  # noqa: F401  (queries the terminal now, while it still can)
    except Exception:
        return "halfblock"
    _graphics_ready.add(mode)
    return mode


def fit_info(parts: list[str], width: int) -> str:
    """The parts (most important first) joined by two spaces, dropping the last ones that would
    not fit `width` columns (a narrow preview, as in the caption editor, keeps name and size)."""
    while len(parts) > 1 and cell_len("  ".join(parts)) > width > 0:  # display width: 日本.jpg is 8
        parts = parts[:-1]
    return "  ".join(parts)


class HalfBlocks(Widget):
    """Draws a PIL image scaled to fit, two pixels per cell (upper half = fg, lower half = bg)."""

    DEFAULT_CSS = "HalfBlocks { width: 1fr; height: 1fr; }"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._image = None
        self._strips: list[Strip] = []
        self._rows_for: tuple[int, int] | None = None

    def set_image(self, image) -> None:
        self._image = image
        self._rows_for = None
        self.refresh()

    def _layout(self) -> None:
        from PIL import Image  # PIL loads with the first image shown, not with the TUI

        width, height = self.size
        self._rows_for = (width, height)
        self._strips = []
        if self._image is None or width < 1 or height < 1:
            return
        iw, ih = self._image.size
        # A terminal cell is about twice as tall as wide: one cell shows 1×2 image pixels.
        scale = min(width / iw, (height * 2) / ih)
        w, h = max(1, int(iw * scale)), max(2, int(ih * scale))
        h += h % 2
        pixels = self._image.resize((w, h), Image.Resampling.BILINEAR).load()
        pad = (width - w) // 2
        blank = Segment(" " * pad) if pad else None
        for y in range(0, h, 2):
            segments = [blank] if blank else []
            for x in range(w):
                top, bottom = pixels[x, y], pixels[x, y + 1]
                segments.append(Segment("▀", Style.from_color(Color.from_rgb(*top[:3]),
                                                              Color.from_rgb(*bottom[:3]))))
            self._strips.append(Strip(segments))

    def render_line(self, y: int) -> Strip:
        if self._rows_for != tuple(self.size):
            self._layout()
        return self._strips[y] if y < len(self._strips) else Strip.blank(self.size.width)


class ImagePreview(ShowsWorkerErrors, Container):
    """Shows the image at `path` in the current `mode`; loading happens in a worker thread."""

    DEFAULT_CSS = """
    ImagePreview { height: 1fr; }
    ImagePreview > #preview-info { height: 1; color: $text-muted; }
    """

    mode: reactive[str] = reactive("halfblock")

    def __init__(self, mode: str = "halfblock", **kwargs) -> None:
        super().__init__(**kwargs)
        self.set_reactive(ImagePreview.mode, mode if mode in MODES else "halfblock")
        self.path: Path | None = None
        self.info = ""

    def compose(self) -> ComposeResult:
        yield Static("", id="preview-info", markup=False)
        yield Container(id="preview-canvas")

    def show(self, path: Path | None) -> None:
        """Preview `path` (None clears it)."""
        self.path = path
        self._load(path, self.mode)

    def watch_mode(self) -> None:
        self._load(self.path, self.mode)

    def cycle_mode(self) -> str:
        """Next available mode (graphics modes only where prepared at start-up)."""
        usable = [m for m in MODES if m not in ("kitty", "sixel") or m in _graphics_ready]
        self.mode = usable[(usable.index(self.mode) + 1) % len(usable)] if self.mode in usable else usable[0]
        return self.mode

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False, description="load preview")
    def _load(self, path: Path | None, mode: str) -> None:
        image, info = None, ""  # info: the parts of the info line, or a message
        if path is not None:
            from PIL import Image  # PIL loads with the first image shown, not with the TUI

            try:
                with Image.open(path) as im:
                    info = [path.name, f"{im.width}×{im.height}", f"{path.stat().st_size / 1024:.0f} KiB", im.mode]
                    if mode != "text":
                        im.draft("RGB", (512, 512))  # fast JPEG decode at a reduced size
                        image = im.convert("RGB")
                        image.thumbnail((256, 256))
            except (OSError, ValueError, Image.DecompressionBombError) as e:
                info = f"{path.name}: cannot be previewed ({e})"
        self.app.call_from_thread(self._apply, path, mode, image, info)

    def _apply(self, path: Path | None, mode: str, image, info: str | list[str]) -> None:
        if path != self.path or mode != self.mode:
            return  # a newer request is under way
        line = self.query_one("#preview-info", Static)
        if isinstance(info, list):
            info = fit_info(info, line.content_size.width)
        self.info = info
        line.update(info, layout=False)
        canvas = self.query_one("#preview-canvas", Container)
        if mode == "halfblock" and image is not None:
            # Reuse the drawing widget: mounting a new one per image re-lays out the whole screen.
            existing = canvas.query(HalfBlocks)
            if existing:
                existing.first().set_image(image)
                return
        canvas.remove_children()
        if image is None:
            return
        if mode in ("kitty", "sixel") and mode in _graphics_ready:
            from textual_image.widget import SixelImage, TGPImage  # imported by prepare_graphics, if at all

            cls = TGPImage if mode == "kitty" else SixelImage
            canvas.mount(cls(image))
        elif mode != "text":
            blocks = HalfBlocks()
            canvas.mount(blocks)
            blocks.set_image(image)
