"""Line charts drawn with unicode braille (2×4 dots a cell): the monitor's loss and VRAM graphs.

No plotting library: a chart is a few hundred dots wide, so each trace is binned into pixel
columns (min/max per column, so a noisy loss keeps its envelope) and drawn as vertical spans that
join neighbouring columns. Rendering costs O(points + cells) and is cached per size and data.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import Callable, Sequence

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from loradeck.tui.run_watch import RunView

# Dot bits of a braille cell, indexed [row][column] (unicode braille patterns, U+2800 base).
_DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
AXIS_WIDTH = 8
GIB = 1024 ** 3


@dataclass(frozen=True)
class Trace:
    label: str
    xs: Sequence[float]
    ys: Sequence[float]
    color: str


def _finite_range(values: Sequence[float]) -> tuple[float, float] | None:
    lo, hi = math.inf, -math.inf
    for v in values:
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    return (lo, hi) if lo <= hi else None


def _columns(xs: Sequence[float], ys: Sequence[float], x0: float, x1: float, width: int):
    """(min, max) of y per pixel column, None where a column has no point.

    `xs` ascend (the tracker keeps them so), so each column is one slice found by bisection and
    its min/max run in C: the cost is O(width · log n) Python steps, not O(n).
    """
    cols: list[tuple[float, float] | None] = [None] * width
    if not xs:
        return cols
    step = ((x1 - x0) or 1.0) / max(1, width - 1)
    lo = bisect_left(xs, x0 - step / 2)
    for c in range(width):
        hi = bisect_left(xs, x0 + (c + 0.5) * step, lo)
        if hi > lo:
            seg = ys[lo:hi]
            cols[c] = (min(seg), max(seg))
        lo = hi
    return cols


def braille_lines(traces: Sequence[Trace], width: int, height: int, *, x_range: tuple[float, float],
                  y_range: tuple[float, float]) -> list[Text]:
    """`height` rows of `width` braille cells with every trace drawn; later traces draw on top."""
    pw, ph = width * 2, height * 4
    bits = [[0] * width for _ in range(height)]
    colors: list[list[str | None]] = [[None] * width for _ in range(height)]
    y0, y1 = y_range
    yspan = (y1 - y0) or 1.0

    def py(y: float) -> int:
        return min(ph - 1, max(0, int(round((y1 - y) / yspan * (ph - 1)))))

    def dot(c: int, top: int, bottom: int, color: str) -> None:
        for row in range(top, bottom + 1):
            r, cc = row // 4, c // 2
            bits[r][cc] |= _DOTS[row % 4][c % 2]
            colors[r][cc] = color

    for trace in traces:
        prev: tuple[int, float] | None = None  # (column, pixel y of the column's mean)
        for c, cell in enumerate(_columns(trace.xs, trace.ys, x_range[0], x_range[1], pw)):
            if cell is None:
                continue
            lo, hi = py(cell[1]), py(cell[0])  # pixel rows grow downwards
            mid = (lo + hi) / 2
            if prev is not None:
                # a straight segment from the previous column, so sparse points still make a line
                pc, pmid = prev
                for k in range(pc + 1, c):
                    y_a = pmid + (mid - pmid) * (k - 1 - pc) / (c - pc)
                    y_b = pmid + (mid - pmid) * (k - pc) / (c - pc)
                    dot(k, int(round(min(y_a, y_b))), int(round(max(y_a, y_b))), trace.color)
                edge = pmid + (mid - pmid) * (c - 1 - pc) / (c - pc)
                lo, hi = min(lo, int(round(edge))), max(hi, int(round(edge)))
            dot(c, lo, hi, trace.color)
            prev = (c, mid)
    styles = {t.color: Style(color=t.color) for t in traces}
    lines = []
    for r in range(height):
        text = Text()
        row_bits, row_colors = bits[r], colors[r]
        run_start = 0
        # one span per run of same-coloured cells, not one per cell
        for cc in range(1, width + 1):
            if cc == width or row_colors[cc] != row_colors[run_start]:
                chars = "".join(chr(0x2800 + b) if b else " " for b in row_bits[run_start:cc])
                color = row_colors[run_start]
                text.append(chars, styles[color] if color else None)
                run_start = cc
        lines.append(text)
    return lines


def fmt_loss(v: float) -> str:
    if v == 0:
        return "0"
    return f"{v:.3f}" if 0.001 <= abs(v) < 1000 else f"{v:.1e}"


def fmt_gib(v: float) -> str:
    return f"{v / GIB:.1f}G"


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == math.inf:
        return "--"
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class LineChart(Widget):
    """A titled braille chart with a y axis, a legend and an x-range line, or a message instead."""

    DEFAULT_CSS = """
    LineChart { height: 1fr; min-height: 5; }
    """

    def __init__(self, title: str, *, y_fmt: Callable[[float], str] = fmt_loss,
                 x_fmt: Callable[[float], str] = lambda v: f"{v:g}", **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.y_fmt = y_fmt
        self.x_fmt = x_fmt
        self.traces: list[Trace] = []
        self.y_range: tuple[float, float] | None = None
        self.message: str = "waiting for data"
        self.note: str = ""
        self._cache: tuple | None = None
        self.renders = 0

    def plot(self, traces: list[Trace], *, y_range: tuple[float, float] | None = None,
             message: str = "", note: str = "") -> None:
        """Replace what is drawn; an empty `traces` shows `message` instead of a graph."""
        self.traces = [t for t in traces if len(t.xs)]
        self.y_range = y_range
        self.message = message or "waiting for data"
        self.note = note
        self._cache = None
        self.refresh()

    def render(self) -> Text:
        width, height = self.content_size.width, self.content_size.height
        key = (width, height)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        self.renders += 1
        text = self._draw(width, height)
        self._cache = (key, text)
        return text

    def _draw(self, width: int, height: int) -> Text:
        head = Text(self.title, style="bold")
        for t in self.traces:
            head.append("  ")
            head.append("━ ", style=t.color)
            head.append(t.label)
        if self.note:
            head.append("  " + self.note, style="italic dim")
        head.truncate(width)
        plot_w, plot_h = width - AXIS_WIDTH, height - 2
        if not self.traces or plot_w < 4 or plot_h < 1:
            return Text("\n").join([head, Text(self.message, style="dim")])
        x0 = min(t.xs[0] for t in self.traces)
        x1 = max(t.xs[-1] for t in self.traces)
        if self.y_range is not None:
            y0, y1 = self.y_range
        else:
            lo_hi = [r for t in self.traces if (r := _finite_range([y for y in t.ys if y == y]))]
            y0, y1 = min(r[0] for r in lo_hi), max(r[1] for r in lo_hi)
            pad = (y1 - y0) * 0.05 or abs(y1) * 0.05 or 1.0
            y0, y1 = y0 - pad, y1 + pad
        rows = braille_lines(self.traces, plot_w, plot_h, x_range=(x0, x1), y_range=(y0, y1))
        out = [head]
        for i, row in enumerate(rows):
            label = ""
            if i == 0:
                label = self.y_fmt(y1)
            elif i == plot_h - 1:
                label = self.y_fmt(y0)
            elif i == plot_h // 2 and plot_h >= 5:
                label = self.y_fmt((y0 + y1) / 2)
            line = Text(label.rjust(AXIS_WIDTH - 1)[: AXIS_WIDTH - 1] + "┤", style="dim")
            line.append_text(row)
            out.append(line)
        left, right = self.x_fmt(x0), self.x_fmt(x1)
        axis = " " * AXIS_WIDTH + left + right.rjust(max(1, plot_w - len(left)))
        out.append(Text(axis, style="dim"))
        return Text("\n").join(out)


class LossChart(LineChart):
    """Loss against step: the raw values and their smoothed (EMA) line."""

    def __init__(self, **kwargs) -> None:
        super().__init__("Loss", y_fmt=fmt_loss, x_fmt=lambda v: f"step {int(v)}", **kwargs)

    def show(self, view: RunView) -> None:
        traces = [Trace("raw", *view.loss_raw, color="grey50"),
                  Trace("smoothed", *view.loss_smooth, color="bright_cyan")]
        self.plot(traces, message="no loss yet: the first step has not finished")


class VramChart(LineChart):
    """Memory against time since the start: NVML's device and process numbers, torch's own."""

    def __init__(self, **kwargs) -> None:
        super().__init__("VRAM", y_fmt=fmt_gib, x_fmt=lambda v: fmt_duration(v), **kwargs)

    def show(self, view: RunView) -> None:
        traces = [Trace("device used", *view.gpu_used, color="yellow"),
                  Trace("this run", *view.gpu_proc, color="magenta"),
                  Trace("torch peak", *view.torch_peak, color="red"),
                  Trace("torch alloc", *view.torch_allocated, color="green")]
        y_range = (0.0, float(view.gpu_total)) if view.gpu_total else None
        if y_range is None:
            peak = max([*view.torch_peak[1], *view.torch_allocated[1], 0.0])
            y_range = (0.0, peak * 1.1) if peak > 0 else None
        self.plot(traces, y_range=y_range, message=vram_message(view))


def vram_message(view: RunView) -> str:
    """What to say when there is no memory to draw (no GPU, no NVML, not started yet)."""
    if view.gpu_available is False:
        return "No GPU memory to show: no GPU is visible to NVML. Loss, speed and logs still update."
    if view.device and "cuda" not in view.device.lower() and view.gpu_available is None:
        return f"No GPU: this run trains on {view.device}; there is no VRAM to graph."
    return "no memory samples yet"
