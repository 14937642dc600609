"""BLIP auto-captioning of a project's dataset: batched, interruptible, resumable.

    caption_project(project, CaptionOptions(...), on_event=..., should_stop=...) -> CaptionReport

What it does, in order:
1. Plans: every dataset image without a caption (all of them with `overwrite`); the rest are skipped.
2. Loads the model (loradeck.trainer.captions.blip_model) only when there is something to caption.
3. For each batch: images are decoded and preprocessed by a thread pool that runs ahead of the model,
   so decoding overlaps generation; the model captions the batch; the captions are written at once
   (loradeck.trainer.dataset.caption_store: atomic, utf-8), so a stop or a crash loses at most the batch in flight.
4. Between batches it asks `should_stop()`: Ctrl-C / SIGTERM in the CLI end the run there, and a
   rerun skips what is already captioned, so it carries on where it stopped.

A caption is written only if the caption file is still as it was when planned: a caption the user
(or another process) wrote meanwhile is never clobbered. A broken image is skipped with a reason and
the rest go on. Events (`task_started`, `progress`, `item_failed`, `task_finished`; loradeck.trainer.events)
go to `on_event(type, **fields)`, which the CLI turns into a progress bar or JSON lines.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

from loradeck.trainer.captions.blip_model import DEFAULT_MODEL, load_captioner
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.dataset import caption_journal, caption_store
from loradeck.trainer.dataset.caption_store import apply_affixes  # noqa: F401 (wd14_tagging names it here)
from loradeck.trainer.dataset.project import Project, dataset_images
from loradeck.trainer.errors import ConfigError, LoradeckError, StopRequested

TASK = "caption"

# Batch sizes when --batch-size is not given (docs/benchmarks.md, "Captioning", explains them):
# BLIP-large in fp16 is ~0.9 GB of weights plus ~0.1 GB per image with 3 beams, so 16 images fit a
# 6 GB card with room to spare and keep a GPU busy; on a CPU, beyond 4 the gain is small.
DEFAULT_BATCH_CUDA = 16
DEFAULT_BATCH_CPU = 4

EventSink = Callable[..., Any]


@dataclass
class CaptionOptions:
    """How to caption. Defaults follow kohya's make_captions (beam search, 5-75 tokens)."""

    model: str | None = None           # None: the project's model (project_caption_model)
    device: str = "auto"               # auto | cpu | cuda | cuda:N
    batch_size: int | None = None      # None: DEFAULT_BATCH_CUDA on a GPU, DEFAULT_BATCH_CPU on a CPU
    overwrite: bool = False            # recaption images that already have a caption
    prefix: str | None = None          # None: the project's trigger word (when use_trigger_word)
    suffix: str = ""
    use_trigger_word: bool = True
    beams: int = 3                     # beam search width (1 = greedy) when not sampling
    sample: bool = False               # nucleus sampling instead of beam search
    top_p: float = 0.9
    temperature: float = 1.0
    min_length: int = 5                # in generated tokens, the prompt not counted
    max_length: int = 75
    prompt: str = ""                   # conditional captioning, e.g. "a picture of"; removed from the output
    seed: int | None = None
    workers: int = 0                   # image decoding threads; 0: min(4, CPU count)

    def validate(self) -> None:
        """Raise ConfigError naming the first bad value."""
        checks = [
            (self.batch_size is None or (isinstance(self.batch_size, int) and self.batch_size >= 1),
             f"batch size must be a positive integer, got {self.batch_size!r}"),
            (isinstance(self.beams, int) and 1 <= self.beams <= 32, f"beams must be 1-32, got {self.beams!r}"),
            (0 < self.top_p <= 1, f"top-p must be in (0, 1], got {self.top_p!r}"),
            (self.temperature > 0, f"temperature must be > 0, got {self.temperature!r}"),
            (isinstance(self.min_length, int) and self.min_length >= 0,
             f"min length must be >= 0, got {self.min_length!r}"),
            (isinstance(self.max_length, int) and 1 <= self.max_length <= 256,
             f"max length must be 1-256 tokens, got {self.max_length!r}"),
            (self.min_length <= self.max_length,
             f"min length {self.min_length} is longer than max length {self.max_length}"),
            (self.workers >= 0, f"workers must be >= 0, got {self.workers!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        for name in ("prefix", "suffix", "prompt"):
            value = getattr(self, name)
            if value is not None and ("\n" in value or "\r" in value):
                raise ConfigError(f"{name} must be one line")


@dataclass
class CaptionReport:
    """What a captioning run did. `failed` maps image file names to one-line reasons."""

    project: str
    model: str
    total: int = 0                 # images in dataset/
    captioned: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)    # already had a caption
    failed: dict[str, str] = field(default_factory=dict)
    stopped: bool = False
    device: str = ""
    batch_size: int = 0
    prefix: str = ""
    suffix: str = ""
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "stopped" if self.stopped else "completed"

    def to_dict(self) -> dict[str, Any]:
        """The `--json` summary: counts, failures with reasons, and whether it was stopped."""
        return {
            "ok": True, "project": self.project, "model": self.model, "device": self.device,
            "status": self.status, "stopped": self.stopped, "total": self.total,
            "captioned": len(self.captioned), "skipped": len(self.skipped),
            "failed": [{"image": name, "reason": why} for name, why in self.failed.items()],
            "captioned_files": list(self.captioned), "batch_size": self.batch_size,
            "prefix": self.prefix, "suffix": self.suffix, "seconds": round(self.seconds, 3),
            "images_per_sec": round(len(self.captioned) / self.seconds, 3) if self.seconds else None,
        }


# --- the caption policy (pure functions, one place each) ------------------------------------------

# The offline tiny BLIP: the captioner of projects on a synthetic base model (the demo, tests), so
# captioning them never reaches for a download.
SYNTHETIC_CAPTION_MODEL = "synthetic:blip-tiny"


def project_caption_model(settings, override: str | None = None) -> str:
    """The captioning model for a project (`settings`: its config.project_settings.Settings): `override` (the
    CLI's --model), else project.toml [caption] model, else SYNTHETIC_CAPTION_MODEL for a project on a
    synthetic base model, else DEFAULT_MODEL."""
    if override and override.strip():
        return override.strip()
    if settings.caption.model.strip():
        return settings.caption.model.strip()
    return default_caption_model(settings)


def default_caption_model(settings) -> str:
    """The model used when project.toml names none."""
    return SYNTHETIC_CAPTION_MODEL if settings.project.base_model.startswith("synthetic:") else DEFAULT_MODEL


def clean_caption(text: str) -> str:
    """Model output as a caption: one line, single spaces, no space before punctuation."""
    text = " ".join(text.split())
    return re.sub(r"\s+([,.;:!?])", r"\1", text)


def default_batch_size(device) -> int:
    return DEFAULT_BATCH_CUDA if getattr(device, "type", str(device)) == "cuda" else DEFAULT_BATCH_CPU


# --- image decoding, overlapped with generation ---------------------------------------------------

class _BadImage(Exception):
    """An image that cannot be captioned; str() is the one-line reason."""


def _load_pixels(path: Path, image_processor) -> Any:
    """Decode one image and preprocess it for the model: a (1, 3, H, W) tensor, or _BadImage."""
    from PIL import Image, ImageOps  # PIL: only once captioning runs; the CLI and the TUI import this module

    size = getattr(image_processor, "size", None) or {}
    side = max(size.get("height", 0), size.get("width", 0), size.get("shortest_edge", 0)) or 384
    try:
        with Image.open(path) as im:
            # JPEGs decode straight at a reduced scale that still covers the model's input size:
            # a big photo then costs a fraction of the time and memory.
            im.draft("RGB", (side, side))
            im.load()  # decode fully here: truncated or corrupt files fail now, not in the model
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "P", "PA") and ("A" in im.mode or "transparency" in im.info):
                rgba = im.convert("RGBA")
                im = Image.new("RGB", rgba.size, (255, 255, 255))
                im.paste(rgba, mask=rgba.getchannel("A"))  # transparent areas read as white
            else:
                im = im.convert("RGB")
    except FileNotFoundError:
        raise _BadImage("file disappeared while captioning") from None
    except Image.DecompressionBombError as e:
        raise _BadImage(f"too many pixels ({e})") from None
    except Exception as e:  # noqa: BLE001 - whatever a malformed file makes PIL raise, skip that file
        raise _BadImage(f"cannot decode image: {_one_line(e)}") from None
    try:
        return image_processor(images=im, return_tensors="pt")["pixel_values"]
    except Exception as e:  # noqa: BLE001 - e.g. a 1-pixel-wide image the resize refuses
        raise _BadImage(f"cannot preprocess image ({im.width}x{im.height}): {_one_line(e)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _Prefetcher:
    """Decodes images on a thread pool, `lookahead` images ahead of what the model has asked for."""

    def __init__(self, paths: list[Path], image_processor, workers: int, lookahead: int):
        self._todo = deque(paths)
        self._pending: deque[tuple[Path, Future]] = deque()
        self._processor = image_processor
        self._lookahead = lookahead
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caption-decode")

    def _fill(self, want: int) -> None:
        while self._todo and len(self._pending) < want:
            path = self._todo.popleft()
            self._pending.append((path, self._pool.submit(_load_pixels, path, self._processor)))

    def take(self, n: int) -> list[tuple[Path, Any]]:
        """The next `n` images as (path, pixels or _BadImage); starts decoding the ones after."""
        self._fill(n + self._lookahead)
        out = []
        for _ in range(min(n, len(self._pending))):
            path, fut = self._pending.popleft()
            try:
                out.append((path, fut.result()))
            except _BadImage as e:
                out.append((path, e))
        self._fill(self._lookahead)  # keep the pool busy while the model works on this batch
        return out

    def close(self) -> None:
        for _, fut in self._pending:
            fut.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


# --- generation -----------------------------------------------------------------------------------

def _generation_kwargs(options: CaptionOptions) -> dict[str, Any]:
    kw: dict[str, Any] = dict(min_new_tokens=options.min_length, max_new_tokens=options.max_length)
    if options.sample:
        kw.update(do_sample=True, num_beams=1, top_p=options.top_p, temperature=options.temperature)
    else:
        kw.update(do_sample=False, num_beams=options.beams)
    return kw


def _generate(captioner, pixels, options: CaptionOptions) -> list[str]:
    """Captions for a batch of preprocessed images (one string each, the prompt removed)."""
    import torch  # torch: only once captioning runs; the CLI and the TUI import this module

    pixels = pixels.to(captioner.device, captioner.dtype)
    inputs: dict[str, Any] = {}
    prompt_tokens = 1  # BLIP starts every caption with its [DEC] token
    if options.prompt:
        enc = captioner.tokenizer([options.prompt] * pixels.shape[0], return_tensors="pt")
        inputs = {"input_ids": enc["input_ids"].to(captioner.device),
                  "attention_mask": enc["attention_mask"].to(captioner.device)}
        prompt_tokens = enc["input_ids"].shape[1] - 1  # BLIP drops the trailing [SEP]
    with torch.inference_mode():
        out = captioner.model.generate(pixel_values=pixels, **inputs, **_generation_kwargs(options))
    # The decoder returns prompt + caption; keep the caption (users expect the prompt gone).
    texts = captioner.tokenizer.batch_decode(out[:, prompt_tokens:], skip_special_tokens=True)
    return [clean_caption(t) for t in texts]


def _is_oom(exc: BaseException) -> bool:
    import torch  # torch: only once captioning runs; the CLI and the TUI import this module

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError  # torch < 2.5
    return isinstance(exc, oom) or "out of memory" in str(exc).lower()


# --- the run --------------------------------------------------------------------------------------

def plan(project: Project, overwrite: bool = False, ext: str | None = None):
    """(images to caption with the caption Signature seen now, images skipped as captioned)."""
    if ext is None:
        ext = settings_mod.load(project.settings_file).caption_extension
    todo, skipped = [], []
    for image in dataset_images(project):
        if not overwrite and caption_store.has_caption(image, ext):
            skipped.append(image)
        else:
            todo.append((image, caption_store.Signature.of(caption_store.caption_path(image, ext))))
    return todo, skipped


def caption_project(project: Project, options: CaptionOptions | None = None, *,
                    on_event: EventSink | None = None,
                    should_stop: Callable[[], bool] | None = None, captioner=None,
                    interruptible: Callable[[], ContextManager] | None = None) -> CaptionReport:
    """Caption the dataset images of `project` (see the module docstring). Returns what was done.

    `on_event(type, **fields)` receives task events; `should_stop()` is asked between batches.
    `captioner`: a model from loradeck.trainer.captions.blip_model.load_captioner to reuse across calls (else
    `options.model` is loaded, only if some image needs a caption).
    `interruptible()`: a context manager under which a stop request raises StopRequested at once (the
    CLI's StopOnSignal.interrupting); the model load runs under it, so a stop while loading (which can
    take a while) ends the run as stopped without waiting for the load. Between batches `should_stop`
    is enough.
    Raises LoradeckError (ModelError, ConfigError, ...) when the run cannot go on; captions written
    before that stay written.
    """
    options = options or CaptionOptions()
    options.validate()
    interruptible = interruptible or contextlib.nullcontext
    emit = on_event or (lambda *_a, **_k: None)
    stop = should_stop or (lambda: False)
    started = time.monotonic()

    cfg = settings_mod.load(project.settings_file)
    ext = cfg.caption_extension
    prefix = options.prefix if options.prefix is not None else \
        (cfg.project.trigger_word if options.use_trigger_word else "")
    model = project_caption_model(cfg, options.model)
    todo, skipped = plan(project, options.overwrite, ext)
    report = CaptionReport(project=project.name, model=model, total=len(todo) + len(skipped),
                           skipped=[p.name for p in skipped], prefix=prefix or "", suffix=options.suffix)
    emit("task_started", task=TASK, total=len(todo), skipped=len(skipped), model=model)

    def finish(status: str, **extra) -> CaptionReport:
        report.seconds = time.monotonic() - started
        emit("task_finished", task=TASK, status=status, captioned=len(report.captioned),
             skipped=len(report.skipped), failed=len(report.failed), **extra)
        return report

    if not todo:
        return finish("completed", message="nothing to caption")
    try:
        if captioner is None:
            captioner = _load(model, options.device, emit, len(todo), interruptible)
        report.model = captioner.name
        report.device = str(captioner.device)
        report.batch_size = options.batch_size or default_batch_size(captioner.device)
        if options.seed is not None:
            import torch  # torch: only once captioning runs; the CLI and the TUI import this module

            torch.manual_seed(options.seed)
        # What the run writes is one undoable batch (`loradeck captions undo`), even if it stops half way.
        label = f"caption {captioner.name}" + (" (overwrite)" if options.overwrite else "")
        with caption_journal.batch(project, label) as journal:
            _run_batches(captioner, todo, options, ext, prefix or "", report, emit, stop, journal)
    except StopRequested:
        report.stopped = True
        return finish("stopped", message="stopped while loading the model")
    except BaseException as e:
        if _caused_by_stop(e):  # a library that wraps what interrupts it (transformers' lazy imports)
            report.stopped = True
            return finish("stopped", message="stopped while loading the model")
        if isinstance(e, LoradeckError):
            finish("failed", message=e.one_line())
        else:  # KeyboardInterrupt on a second Ctrl-C, or a bug: still say so
            finish("failed", message=f"{type(e).__name__}: {e}")
        raise
    return finish(report.status)


def _caused_by_stop(error: BaseException) -> bool:
    """Whether `error` was raised while handling a StopRequested (its cause or context chain)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, StopRequested):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def _load(model: str, device: str, emit: EventSink, total: int, interruptible):
    emit("progress", task=TASK, done=0, total=total, message=f"loading {model}")
    # torch's import runs Python inside C++ calls: an exception raised there by the stop aborts the
    # process (pybind11 terminate). So a stop during it only marks the request; it is honoured at once after.
    import torch  # noqa: F401

    with interruptible():  # a stop asked while the model loads (hub, disk) ends the run at once
        captioner = load_captioner(model, device=device)
    emit("progress", task=TASK, done=0, total=total, message=f"model on {captioner.device}")
    return captioner


def _run_batches(captioner, todo, options: CaptionOptions, ext: str, prefix: str, report: CaptionReport,
                 emit: EventSink, stop: Callable[[], bool], journal) -> None:
    signatures = dict(todo)
    workers = options.workers or min(4, os.cpu_count() or 1)
    batch_size = report.batch_size
    feeder = _Prefetcher([p for p, _ in todo], captioner.processor.image_processor, workers,
                         lookahead=batch_size * 2)
    done, started = 0, time.monotonic()
    try:
        while done < len(todo) and not stop():
            batch = feeder.take(batch_size)
            good = [(path, px) for path, px in batch if not isinstance(px, _BadImage)]
            for path, px in batch:
                if isinstance(px, _BadImage):
                    _fail(report, emit, path, str(px))
            texts, batch_size = _generate_adaptive(captioner, good, options, batch_size, report, emit)
            for (path, _), text in zip(good, texts):
                _save(path, text, ext, prefix, options.suffix, signatures[path], report, emit, journal)
            done += len(batch)
            rate = len(report.captioned) / max(time.monotonic() - started, 1e-9)
            emit("progress", task=TASK, done=done, total=len(todo), item=batch[-1][0].name,
                 images_per_sec=round(rate, 3))
        report.stopped = done < len(todo)
    finally:
        feeder.close()


def _generate_adaptive(captioner, good, options, batch_size, report, emit):
    """Generate for `good`; on out-of-memory halve the batch size and retry the pieces."""
    import torch  # torch: only once captioning runs; the CLI and the TUI import this module

    if not good:
        return [], batch_size
    texts: list[str] = []
    i = 0
    while i < len(good):
        chunk = good[i:i + batch_size]
        try:
            texts += _generate(captioner, torch.cat([px for _, px in chunk]), options)
            i += len(chunk)
            continue
        except RuntimeError as e:  # torch.OutOfMemoryError is a RuntimeError
            if not _is_oom(e):
                raise
        # Out of memory. Outside the except block, so the failed attempt's tensors are already freed.
        if captioner.device.type == "cuda":
            torch.cuda.empty_cache()
        if batch_size == 1:
            raise LoradeckError(f"out of memory captioning {chunk[0][0].name} on {captioner.device}",
                                hint="use fewer --beams, a smaller --max-length, or --device cpu")
        batch_size //= 2
        report.batch_size = batch_size
        emit("warning", message=f"out of memory: batch size lowered to {batch_size}")
    return texts, batch_size


def _fail(report: CaptionReport, emit: EventSink, path: Path, reason: str) -> None:
    report.failed[path.name] = reason
    emit("item_failed", task=TASK, item=path.name, reason=reason)


def _save(path: Path, text: str, ext: str, prefix: str, suffix: str, seen, report, emit, journal) -> None:
    if not text:
        # Writing a blank caption would delete the file: never let the model erase anything.
        return _fail(report, emit, path, "the model produced an empty caption")
    before = caption_store.read_caption(path, ext) if seen else None  # for the undo journal
    caption = apply_affixes(text, prefix, suffix)
    try:
        caption_store.write_caption(path, caption, ext, if_unchanged_since=seen)
    except caption_store.CaptionConflict:
        return _fail(report, emit, path, "its caption was written by someone else meanwhile; kept that one")
    except OSError as e:
        raise LoradeckError(f"cannot write the caption of {path.name}: {e.strerror or e}",
                            hint="check free disk space and permissions of dataset/") from None
    journal.add(caption_store.caption_path(path, ext), before, caption)
    report.captioned.append(path.name)
