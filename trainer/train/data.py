"""The training data: prepared images from dataset/, grouped into aspect buckets, in a resumable order.

The prep contract: every prepared image's pixel size IS its bucket (prep already resized and cropped
it), so grouping is by size and nothing is resized here; only a size that the model cannot take (not
a multiple of the model's pixel granularity) is centre-cropped down to one.

The order is a pure function of (seed, epoch): epoch e shuffles each bucket's items (each seen
`repeats` x its own kohya folder repeats times), cuts them into batches of one size, and shuffles the batches. Micro-batch i of
the whole run is therefore known without replaying anything, which is what makes resume exact.
Caption shuffling and dropout draw from a generator seeded by (seed, micro-batch index) for the
same reason.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from loradeck.trainer.cli_hint import command
from loradeck.trainer.dataset.caption_store import read_caption
from loradeck.trainer.dataset.project import is_image_file
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.train import step_count


class DataError(LoradeckError):
    """The dataset cannot be trained on (empty, unreadable images)."""


@dataclass(frozen=True)
class Item:
    path: Path
    caption: str
    size: tuple[int, int]  # (width, height) after cropping to the model's granularity
    repeats: int = 1  # from its kohya N_name import folder (loradeck.trainer.dataset.repeat_folders)

    @property
    def bucket(self) -> tuple[int, int]:
        return self.size


def add_trigger(caption: str, trigger: str) -> str:
    """Put the trigger word first unless the caption already has it as a tag (kohya convention)."""
    trigger = (trigger or "").strip()
    if not trigger:
        return caption
    tags = [t.strip().lower() for t in caption.split(",")]
    if trigger.lower() in tags:
        return caption
    return f"{trigger}, {caption}" if caption else trigger


def scan(dataset_dir: Path, *, caption_extension: str = ".txt", trigger_word: str = "",
         granularity: int = 8, image_repeats: dict[str, int] | None = None) -> list[Item]:
    """The dataset's images with their captions, (cropped) sizes and per-image repeats (by stem);
    DataError when nothing is usable."""
    if not dataset_dir.is_dir():
        raise DataError(f"no dataset folder at {dataset_dir}",
                        hint=f"import images and run: {command('prep', dataset_dir.parent.name)}")
    items, bad = [], []
    for path in sorted(p for p in dataset_dir.iterdir() if p.is_file() and is_image_file(p)
                       and not p.name.startswith(".")):
        try:
            with Image.open(path) as im:
                w, h = im.size
        except Exception as e:  # PIL raises many kinds for corrupt files
            bad.append(f"{path.name} ({type(e).__name__})")
            continue
        cropped = step_count.crop_to((w, h), granularity)
        if cropped is None:
            bad.append(f"{path.name} (smaller than {granularity} px)")
            continue
        w, h = cropped
        caption = add_trigger(read_caption(path, caption_extension) or "", trigger_word)
        items.append(Item(path, caption, (w, h), max(1, int((image_repeats or {}).get(path.stem, 1)))))
    if not items:
        extra = f"; unreadable: {', '.join(bad[:5])}" if bad else ""
        raise DataError(f"no trainable images in {dataset_dir}{extra}",
                        hint=f"import images and run: {command('prep', dataset_dir.parent.name)}")
    return items


def unreadable_count(dataset_dir: Path, items: Sequence[Item]) -> int:
    return sum(1 for p in dataset_dir.iterdir() if p.is_file() and is_image_file(p)
               and not p.name.startswith(".")) - len(items)


def process_caption(caption: str, rng: random.Random, *, shuffle: bool, keep_tokens: int,
                    dropout_rate: float) -> str:
    """Per-step caption: dropped to "" with `dropout_rate`; else tags after the first `keep_tokens` shuffled."""
    if dropout_rate and rng.random() < dropout_rate:
        return ""
    if not shuffle:
        return caption
    tags = [t.strip() for t in caption.split(",") if t.strip()]
    head, tail = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(tail)
    return ", ".join(head + tail)


def tag_frequency(items: Sequence[Item], folder_name: str) -> dict[str, dict[str, int]]:
    """kohya's ss_tag_frequency: {folder: {tag: count}} over the training captions."""
    counts: Counter[str] = Counter()
    for item in items:
        counts.update(t.strip() for t in item.caption.split(",") if t.strip())
    return {folder_name: dict(counts.most_common())}


def kohya_folders(items: Sequence[Item], name: str, repeats: int) -> dict[int, list[Item]]:
    """The items as kohya would have them in folders: {n_repeats: items}, n = image repeats x `repeats`
    (a folder is named f"{n}_{name}" in the metadata)."""
    folders: dict[int, list[Item]] = {}
    for item in items:
        folders.setdefault(item.repeats * repeats, []).append(item)
    return dict(sorted(folders.items()))


class BatchPlan:
    """Which items form micro-batch i of the run (any i, in O(1) after the epoch's plan is built)."""

    def __init__(self, items: Sequence[Item], *, batch_size: int, repeats: int, seed: int,
                 num_processes: int = 1, process_index: int = 0):
        self.items = list(items)
        self.batch_size, self.repeats, self.seed = batch_size, repeats, seed
        self.num_processes, self.process_index = num_processes, process_index
        self._cache: dict[int, list[list[int]]] = {}
        members = step_count.bucket_members(((item.bucket, item.repeats) for item in self.items), repeats)
        self.batches_per_epoch = step_count.batches_per_epoch(members.values(), batch_size=batch_size,
                                                              num_processes=num_processes)

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        if epoch not in self._cache:
            rng = random.Random(f"{self.seed}:order:{epoch}")
            by_bucket: dict[tuple[int, int], list[int]] = {}
            for i, item in enumerate(self.items):
                by_bucket.setdefault(item.bucket, []).extend([i] * (self.repeats * item.repeats))
            batches = []
            for bucket in sorted(by_bucket):
                members = by_bucket[bucket]
                rng.shuffle(members)
                batches += [members[k:k + self.batch_size] for k in range(0, len(members), self.batch_size)]
            rng.shuffle(batches)
            self._cache = {epoch: batches}  # only the current epoch is kept
        return self._cache[epoch]

    def micro_batch(self, index: int) -> tuple[int, list[Item]]:
        """(epoch, items) of this process's micro-batch `index` (0-based over the whole run)."""
        epoch, pos = divmod(index, self.batches_per_epoch)
        batches = self._epoch_batches(epoch)
        pick = batches[(pos * self.num_processes + self.process_index) % len(batches)]
        return epoch, [self.items[i] for i in pick]


def content_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class PixelMemo:
    """Decoded images kept as uint8 (a quarter of float) up to a memory budget, so each file is
    decoded once per run instead of once per step; beyond the budget images are decoded each time."""

    def __init__(self, budget_bytes: int = 1 << 30):
        self.budget, self.used = budget_bytes, 0
        self._memo: dict[Path, Any] = {}

    def __call__(self, item: Item):
        raw = self._memo.get(item.path)
        if raw is None:
            raw = load_pixels_uint8(item)
            if self.used + raw.numel() <= self.budget:
                self._memo[item.path] = raw
                self.used += raw.numel()
        return raw.float().div_(127.5).sub_(1.0)


def load_pixels(item: Item) -> Any:
    """The item's image as a float tensor in [-1, 1], shape (3, H, W), centre-cropped to its bucket."""
    return load_pixels_uint8(item).float().div_(127.5).sub_(1.0)


def load_pixels_uint8(item: Item) -> Any:
    """The item's image as a uint8 tensor (3, H, W), centre-cropped to its bucket."""
    import numpy as np  # numpy, torch: only the trainer builds batches; preflight and the TUI import this module
    import torch

    try:
        with Image.open(item.path) as im:
            im = im.convert("RGB")
            w, h = item.size
            if im.size != (w, h):
                left, top = (im.width - w) // 2, (im.height - h) // 2
                im = im.crop((left, top, left + w, top + h))
            array = np.asarray(im, dtype=np.uint8).copy()
    except Exception as e:
        raise DataError(f"cannot read {item.path.name} ({type(e).__name__}: {e})",
                        hint="re-run prep or remove the file from dataset/") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()
