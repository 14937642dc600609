"""WD14 tagging of a project's dataset: batched, interruptible, merged with captions by policy.

    tag_project(project, TagOptions(...), on_event=..., should_stop=...) -> TagReport

The run mirrors BLIP captioning (trainer.captions.blip_captioning), so the CLI, the TUI and the events are the same:
1. Plans: with policy `skip` only uncaptioned images; with `overwrite` / `append` every image.
2. Loads the tagger (loradeck.trainer.captions.wd14_tagger) only when there is something to do.
3. For each batch: the next batch's images are decoded on a thread pool while the model runs on
   this one; each image's tags (loradeck.trainer.captions.tag_policy) are merged with its caption and written at once
   through the caption store (atomic; a caption changed on disk since planning is never clobbered).
4. `should_stop()` is asked between batches; a rerun with `skip` carries on where it stopped.

The project's trigger word (or `prefix`) goes in front once, through the same idempotent affix rule
as BLIP (loradeck.trainer.captions.blip_captioning.apply_affixes). Every caption written is in `report.changes` with its
text before and after, so a batch (an overwrite above all) can be recorded and undone.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from loradeck.trainer.captions.blip_captioning import TASK, CaptionReport, apply_affixes, plan
from loradeck.trainer.captions.tag_policy import ORDERS, POLICIES, TagRules, merge_tags, select_tags
from loradeck.trainer.captions.wd14_tagger import BadImage, load_tagger, prepare_image
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.dataset import caption_journal, caption_store
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import ConfigError, LoradeckError

TAGGER = "wd14"
# onnxruntime on a GPU keeps up to this many 448 px images in flight comfortably on 6 GB; on a CPU the
# gain from batching levels off early (docs/benchmarks.md, "WD14 tagger").
DEFAULT_BATCH_CUDA = 32
DEFAULT_BATCH_CPU = 8

EventSink = Callable[..., Any]


@dataclass
class TagOptions:
    """How to tag. None fields take the project's [tagger] settings (project.toml)."""

    model: str | None = None
    device: str = "auto"
    batch_size: int | None = None
    policy: str = "skip"               # skip | overwrite | append
    prefix: str | None = None          # None: the project's trigger word (when use_trigger_word)
    suffix: str = ""
    use_trigger_word: bool = True
    general_threshold: float | None = None
    character_threshold: float | None = None
    include_rating: bool | None = None
    replace_underscores: bool | None = None
    exclude: list[str] | None = None   # added to [tagger] exclude
    order: str | None = None
    workers: int = 0                   # decoding threads; 0: min(4, CPU count)

    def validate(self) -> None:
        if self.batch_size is not None and (not isinstance(self.batch_size, int) or self.batch_size < 1):
            raise ConfigError(f"batch size must be a positive integer, got {self.batch_size!r}")
        if self.policy not in POLICIES:
            raise ConfigError(f"unknown caption policy {self.policy!r}", hint=f"use {', '.join(POLICIES)}")
        for name in ("general_threshold", "character_threshold"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ConfigError(f"{name.replace('_', ' ')} must be between 0 and 1, got {value!r}")
        if self.order is not None and self.order not in ORDERS:
            raise ConfigError(f"unknown tag order {self.order!r}", hint=f"use {', '.join(ORDERS)}")
        for name in ("prefix", "suffix"):
            value = getattr(self, name)
            if value is not None and ("\n" in value or "\r" in value):
                raise ConfigError(f"{name} must be one line")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers!r}")

    def rules(self, section: settings_mod.TaggerSection) -> TagRules:
        """The selection rules: these options over the project's [tagger] table."""
        def pick(name):
            value = getattr(self, name)
            return getattr(section, name) if value is None else value

        return TagRules(general_threshold=pick("general_threshold"),
                        character_threshold=pick("character_threshold"),
                        include_rating=pick("include_rating"), replace_underscores=pick("replace_underscores"),
                        exclude=list(section.exclude) + list(self.exclude or []), order=pick("order"))


@dataclass
class TagReport(CaptionReport):
    """CaptionReport plus what changed: one {image, caption_file, before, after} per caption written."""

    tagger: str = TAGGER
    policy: str = "skip"
    unchanged: list[str] = field(default_factory=list)   # nothing new to add (append) or no tag found
    changes: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.update(tagger=self.tagger, policy=self.policy, unchanged=len(self.unchanged), changes=list(self.changes))
        return d


def default_batch_size(tagger) -> int:
    if tagger.max_batch:
        return tagger.max_batch
    return DEFAULT_BATCH_CUDA if tagger.device == "cuda" else DEFAULT_BATCH_CPU


def tag_project(project: Project, options: TagOptions | None = None, *, on_event: EventSink | None = None,
                should_stop: Callable[[], bool] | None = None, tagger=None) -> TagReport:
    """Tag the dataset images of `project` (see the module docstring). Returns what was done.

    `tagger`: a loaded loradeck.trainer.captions.wd14_tagger.Tagger to reuse (else the model is loaded when needed).
    Raises LoradeckError when the run cannot go on; captions written before that stay written.
    """
    options = options or TagOptions()
    options.validate()
    emit = on_event or (lambda *_a, **_k: None)
    stop = should_stop or (lambda: False)
    started = time.monotonic()
    cfg = settings_mod.load(project.settings_file)
    ext = cfg.caption_extension
    rules = options.rules(cfg.tagger)
    model = options.model or cfg.tagger.model
    prefix = options.prefix if options.prefix is not None else \
        (cfg.project.trigger_word if options.use_trigger_word else "")
    todo, skipped = plan(project, options.policy != "skip", ext)
    report = TagReport(project=project.name, model=model, total=len(todo) + len(skipped),
                       skipped=[p.name for p in skipped], prefix=prefix or "", suffix=options.suffix,
                       policy=options.policy)
    emit("task_started", task=TASK, total=len(todo), skipped=len(skipped), model=model)

    def finish(status: str, **extra) -> TagReport:
        report.seconds = time.monotonic() - started
        emit("task_finished", task=TASK, status=status, captioned=len(report.captioned),
             skipped=len(report.skipped), failed=len(report.failed), **extra)
        return report

    if not todo:
        return finish("completed", message="nothing to tag")
    try:
        if tagger is None:
            emit("progress", task=TASK, done=0, total=len(todo), message=f"loading {model}")
            tagger = load_tagger(model, device=options.device)
            emit("progress", task=TASK, done=0, total=len(todo), message=f"tagger on {tagger.device}")
        report.device = tagger.device
        report.batch_size = min(options.batch_size or default_batch_size(tagger), tagger.max_batch or 1 << 30)
        try:
            _run_batches(tagger, todo, options, rules, ext, prefix or "", report, emit, stop)
        finally:
            # What the run wrote is one undoable batch (`loradeck captions undo`), even if it stopped.
            caption_journal.record_batch(
                project, f"tag wd14 ({options.policy})",
                [(project.dataset / c["caption_file"], c["before"], c["after"]) for c in report.changes])
    except LoradeckError as e:
        finish("failed", message=e.one_line())
        raise
    except BaseException as e:  # KeyboardInterrupt on a second Ctrl-C, or a bug: still say so
        finish("failed", message=f"{type(e).__name__}: {e}")
        raise
    return finish(report.status)


def _decode(paths: list[Path], size: int, pool: ThreadPoolExecutor):
    return [(path, pool.submit(_prepare_or_error, path, size)) for path in paths]


def _prepare_or_error(path: Path, size: int):
    try:
        return prepare_image(path, size)
    except BadImage as e:
        return e


def _run_batches(tagger, todo, options: TagOptions, rules: TagRules, ext: str, prefix: str,
                 report: TagReport, emit: EventSink, stop: Callable[[], bool]) -> None:
    import numpy as np  # numpy: only once tagging runs

    signatures = dict(todo)
    paths = [p for p, _ in todo]
    size, batch_size = tagger.size, report.batch_size
    workers = options.workers or min(4, os.cpu_count() or 1)
    done, begun = 0, time.monotonic()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tag-decode") as pool:
        ahead = _decode(paths[:batch_size], size, pool)
        try:
            while done < len(paths) and not stop():
                batch = [(path, fut.result()) for path, fut in ahead]
                # Decode the next batch while the model works on this one.
                start = done + len(batch)
                ahead = _decode(paths[start:start + batch_size], size, pool)
                good = [(path, px) for path, px in batch if not isinstance(px, BadImage)]
                for path, px in batch:
                    if isinstance(px, BadImage):
                        _fail(report, emit, path, str(px))
                if good:
                    probs = tagger.predict(np.stack([px for _, px in good]))
                    for (path, _), row in zip(good, probs):
                        _save(path, select_tags(row, tagger.labels, rules), options.policy, ext, prefix,
                              options.suffix, signatures[path], report, emit)
                done += len(batch)
                rate = len(report.captioned) / max(time.monotonic() - begun, 1e-9)
                emit("progress", task=TASK, done=done, total=len(paths), item=batch[-1][0].name,
                     images_per_sec=round(rate, 3))
        finally:
            for _path, fut in ahead:
                fut.cancel()
    report.stopped = done < len(paths)


def _fail(report: TagReport, emit: EventSink, path: Path, reason: str) -> None:
    report.failed[path.name] = reason
    emit("item_failed", task=TASK, item=path.name, reason=reason)


def _save(path: Path, tags: list[str], policy: str, ext: str, prefix: str, suffix: str, seen,
          report: TagReport, emit: EventSink) -> None:
    before = caption_store.read_caption(path, ext) if seen else None
    if caption_store.Signature.of(caption_store.caption_path(path, ext)) != seen:
        return _fail(report, emit, path, "its caption was written by someone else meanwhile; kept that one")
    body = merge_tags(before, tags, policy)
    if body is None:
        if not before:  # no caption and no tag above the thresholds: say so, write nothing
            return _fail(report, emit, path, "no tag above the thresholds")
        report.unchanged.append(path.name)
        return
    after = apply_affixes(body, prefix, suffix)
    if after == before:
        report.unchanged.append(path.name)
        return
    try:
        caption_store.write_caption(path, after, ext, if_unchanged_since=seen)
    except caption_store.CaptionConflict:
        return _fail(report, emit, path, "its caption was written by someone else meanwhile; kept that one")
    except OSError as e:
        raise LoradeckError(f"cannot write the caption of {path.name}: {e.strerror or e}",
                            hint="check free disk space and permissions of dataset/") from None
    report.captioned.append(path.name)
    report.changes.append({"image": path.name, "caption_file": path.stem + ext, "before": before, "after": after})
