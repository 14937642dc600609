"""A run's sample images as a grid (rows: steps, columns: prompts) and its labelled contact sheet.

    grid = collect(run_dir)              # SampleGrid: steps, prompts, cells, the checkpoint per step
    grid.export_choice(step)             # what `loradeck export --checkpoint` takes for that row
    write_contact_sheet(grid)            # <run>/contact_sheet.png, atomically

Samples come from the run's `sample` events (loradeck.trainer.events: step, path, prompt, index); a run whose
events are lost still shows the files loradeck.trainer.train.loop names `samples/step<8 digits>-<2 digits>.png`,
with prompts from its config.toml. Each step is matched to the LoRA saved at that step: a checkpoint
(checkpoints/, loradeck.trainer.runs.files) or, for the last step of a completed run, the final LoRA. Pillow only:
the TUI imports this (no torch).
"""

from __future__ import annotations

import io
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loradeck.trainer.atomic import atomic_write_bytes
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import iter_file
from loradeck.trainer.runs.files import RunFiles

CONTACT_SHEET = "contact_sheet.png"
_SAMPLE_NAME = re.compile(r"step(\d+)-(\d+)\.png")
THUMB = 160          # largest side of a cell in the contact sheet, in pixels
_PAD, _LABEL_W, _HEAD_H = 6, 110, 44


@dataclass
class SampleGrid:
    run_dir: Path
    steps: list[int] = field(default_factory=list)                       # ascending
    prompts: list[str] = field(default_factory=list)                     # column order (sample index)
    cells: dict[tuple[int, int], Path] = field(default_factory=dict)     # (step, column) -> PNG
    checkpoints: dict[int, Path] = field(default_factory=dict)           # step -> checkpoint LoRA
    final_step: int | None = None                                        # a completed run's last step
    final_output: Path | None = None

    def cell(self, step: int, column: int) -> Path | None:
        return self.cells.get((step, column))

    def export_choice(self, step: int) -> str | None:
        """The `--checkpoint` value that exports the LoRA of `step`: its step number, "" for the final
        LoRA, or None when no LoRA of that step was kept."""
        if step in self.checkpoints:
            return str(step)
        if self.final_output is not None and step == self.final_step:
            return ""
        return None

    def lora_label(self, step: int) -> str:
        choice = self.export_choice(step)
        return "final" if choice == "" else "ckpt" if choice else "-"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run_dir.name, "prompts": list(self.prompts),
            "steps": [{"step": s, "lora": self.lora_label(s), "checkpoint": self.export_choice(s),
                       "samples": [str(self.cells[(s, c)]) if (s, c) in self.cells else None
                                   for c in range(len(self.prompts))]} for s in self.steps],
        }


def _config(run_dir: Path) -> dict[str, Any]:
    try:
        return tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def collect(run_dir: Path) -> SampleGrid:
    """The samples of the run in `run_dir` (see the module docstring). Missing files are left out."""
    files = RunFiles(Path(run_dir))
    config = _config(files.dir)
    grid = SampleGrid(files.dir)
    prompts: dict[int, str] = {}
    finished: dict[str, Any] | None = None
    try:
        events = list(iter_file(files.events))
    except OSError:
        events = []
    for ev in events:
        if ev.get("type") == "run_finished":
            finished = ev
        if ev.get("type") != "sample" or not isinstance(ev.get("step"), int) or not ev.get("path"):
            continue
        path = Path(str(ev["path"]))
        path = path if path.is_absolute() else files.dir / path
        m = _SAMPLE_NAME.fullmatch(path.name)
        index = ev.get("index") if isinstance(ev.get("index"), int) else int(m.group(2)) if m else None
        if index is None or not path.is_file():
            continue
        prompts.setdefault(index, str(ev.get("prompt") or ""))
        grid.cells[(ev["step"], index)] = path
    configured = [str(p) for p in config.get("sample_prompts") or []]
    if files.samples.is_dir():  # files without events (events lost, or written by an older trainer)
        for path in files.samples.glob("step*-*.png"):
            m = _SAMPLE_NAME.fullmatch(path.name)
            if m and (int(m.group(1)), int(m.group(2))) not in grid.cells:
                step, index = int(m.group(1)), int(m.group(2))
                grid.cells[(step, index)] = path
                prompts.setdefault(index, configured[index] if index < len(configured) else f"prompt {index + 1}")
    grid.steps = sorted({step for step, _ in grid.cells})
    grid.prompts = [prompts.get(i, f"prompt {i + 1}") for i in range(max(prompts, default=-1) + 1)]
    grid.checkpoints = files.checkpoint_files(str(config.get("output_name") or "lora"))
    if finished and finished.get("status") == "completed":
        output = Path(str(finished.get("output") or files.output(str(config.get("output_name") or "lora"))))
        output = output if output.is_absolute() else files.dir / output
        steps_done = finished.get("steps_done")
        if output.is_file():
            grid.final_output = output
            grid.final_step = steps_done if isinstance(steps_done, int) else (max(grid.steps) if grid.steps else None)
    return grid


# ------------------------------------------------------------------------------ the contact sheet

def _font(size: int):
    from PIL import ImageFont  # PIL: only when a contact sheet is drawn; the TUI lists grids without it

    try:
        return ImageFont.load_default(size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def _fit(draw, text: str, font, width: int) -> str:
    """`text` cut with an ellipsis to fit `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _wrap(draw, text: str, font, width: int, lines: int) -> list[str]:
    """Up to `lines` lines of `text` within `width` pixels, the last cut with an ellipsis."""
    words, out, line = text.split(), [], ""
    for i, word in enumerate(words):
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
            continue
        out.append(line)
        line = word
        if len(out) == lines - 1:
            line = " ".join(words[i:])
            break
    if line:
        out.append(line)
    return [_fit(draw, x, font, width) for x in out[:lines]]


def render_contact_sheet(grid: SampleGrid, thumb: int = THUMB):
    """The grid as one PIL image: a header row with the prompts, a label column with the steps (and
    whether a LoRA of that step can be exported), a thumbnail per sample, a grey box where one is missing."""
    # PIL: only when a contact sheet is drawn; the TUI lists grids without it
    from PIL import Image, ImageDraw, ImageOps

    if not grid.steps:
        raise LoradeckError(f"run {grid.run_dir.name} has no samples",
                            hint="train with sample prompts and --sample-every-steps N")
    cols, rows = len(grid.prompts), len(grid.steps)
    sheet = Image.new("RGB", (_LABEL_W + cols * (thumb + _PAD) + _PAD, _HEAD_H + rows * (thumb + _PAD) + _PAD),
                      (24, 24, 28))
    draw = ImageDraw.Draw(sheet)
    font, small = _font(14), _font(12)
    for c, prompt in enumerate(grid.prompts):
        x = _LABEL_W + c * (thumb + _PAD)
        for k, line in enumerate(_wrap(draw, prompt, small, thumb, 2)):
            draw.text((x, 6 + k * 16), line, fill=(230, 230, 230), font=small)
    for r, step in enumerate(grid.steps):
        y = _HEAD_H + r * (thumb + _PAD)
        draw.text((_PAD, y + 4), f"step {step}", fill=(255, 255, 255), font=font)
        draw.text((_PAD, y + 24), grid.lora_label(step), fill=(140, 200, 140) if grid.export_choice(step)
                  is not None else (150, 150, 150), font=small)
        for c in range(cols):
            x = _LABEL_W + c * (thumb + _PAD)
            path = grid.cell(step, c)
            try:
                if path is None:
                    raise OSError("no sample")
                with Image.open(path) as im:
                    im = ImageOps.contain(im.convert("RGB"), (thumb, thumb))  # small samples scaled up too
                    sheet.paste(im, (x + (thumb - im.width) // 2, y + (thumb - im.height) // 2))
            except (OSError, ValueError):
                draw.rectangle((x, y, x + thumb - 1, y + thumb - 1), outline=(90, 90, 90))
                draw.text((x + 8, y + thumb // 2 - 8), "missing", fill=(150, 150, 150), font=small)
    return sheet


def write_contact_sheet(grid: SampleGrid, dest: Path | None = None, thumb: int = THUMB) -> Path:
    """Render the contact sheet and write it atomically (default: <run>/contact_sheet.png)."""
    dest = Path(dest) if dest else grid.run_dir / CONTACT_SHEET
    buf = io.BytesIO()
    render_contact_sheet(grid, thumb).save(buf, format="PNG")
    try:
        atomic_write_bytes(dest, buf.getvalue())
    except OSError as e:
        raise LoradeckError(f"cannot write {dest}: {e.strerror or e}") from None
    return dest
