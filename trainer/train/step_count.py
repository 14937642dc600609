"""How many optimizer steps a run takes: the one formula behind `loradeck check`, the train form's step
line and the trainer's loop (which writes it to run_started and status.json).

An epoch shows every image `repeats` x its kohya folder repeats times. Images are batched per bucket
(a prepared image's pixel size IS its bucket, loradeck.trainer.dataset.buckets), so each bucket ends with
its own partial batch: buckets of 5, 3 and 1 images at batch 2 make 3 + 2 + 1 = 6 batches, not
ceil(9 / 2) = 5. With several processes each takes its share of the batches per epoch. Gradient
accumulation folds micro-batches into optimizer steps across epoch boundaries; `--steps` wins over
`--epochs`. loradeck.trainer.train.data.BatchPlan orders the batches this module counts.

No torch and no image decoding here: the TUI imports it. `dataset_sizes` reads sizes from the prep
manifest and only opens (the header of) an image prep did not record. Like the trainer, `count` crops
each size to the base model's pixel granularity (loradeck.trainer.config.model_family: 64 px for SD 1.x,
32 for SDXL, 4 for the tiny synthetic models), read from its configs without weights, so buckets that
the trainer merges (small resolutions, whose bucket step is finer) are merged here too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from PIL import Image

from loradeck.trainer.config import model_family
from loradeck.trainer.dataset.prep import load_manifest
from loradeck.trainer.dataset.project import dataset_images

Size = tuple[int, int]  # (width, height): the bucket


@dataclass(frozen=True)
class StepCount:
    images: int  # distinct images
    weighted_images: int  # counting each image its kohya folder repeats times (before [train] repeats)
    buckets: int
    batches_per_epoch: int  # micro-batches per process in one epoch
    steps_per_epoch: int  # optimizer steps per epoch, rounded up (accumulation may span epochs)
    total_steps: int


def batches_per_epoch(bucket_members: Iterable[int], *, batch_size: int, num_processes: int = 1) -> int:
    """Micro-batches per process in one epoch: each bucket's members cut into batches, the last one partial."""
    batches = sum(-(-n // batch_size) for n in bucket_members if n > 0)
    return batches // max(1, num_processes) or 1


def total_steps(config, batches: int) -> int:
    """--steps wins; otherwise epochs x batches per epoch / grad accumulation, rounded up."""
    if config.max_train_steps:
        return int(config.max_train_steps)
    epochs = config.max_train_epochs or 1
    return max(1, -(-batches * epochs // config.gradient_accumulation_steps))


def bucket_members(images: Iterable[tuple[Size, int]], repeats: int) -> Counter[Size]:
    """{bucket: how many times its images appear in one epoch}, from (bucket, folder repeats) per image."""
    members: Counter[Size] = Counter()
    for size, image_repeats in images:
        members[tuple(size)] += repeats * max(1, int(image_repeats))
    return members


def count(config, sizes: Mapping[str, Size], image_repeats: Mapping[str, int] | None = None) -> StepCount:
    """The steps a run of `config` takes over these images ({file name: (width, height)}); `image_repeats`
    is {stem: N} from kohya repeat folders (loradeck.trainer.dataset.repeat_folders.image_repeats)."""
    image_repeats = image_repeats or {}
    grain = model_family.pixel_granularity(config.base_model) or 1  # unknown yet: prep's sizes as they are
    images = [(cropped, image_repeats.get(Path(name).stem, 1)) for name, size in sizes.items()
              if (cropped := crop_to(size, grain)) is not None]
    members = bucket_members(images, config.repeats)
    weighted = sum(max(1, int(n)) for _, n in images)
    if not images:
        return StepCount(0, 0, 0, 0, 0, int(config.max_train_steps or 0))
    batches = batches_per_epoch(members.values(), batch_size=config.batch_size, num_processes=max(1, config.gpus))
    return StepCount(images=len(images), weighted_images=weighted, buckets=len(members), batches_per_epoch=batches,
                     steps_per_epoch=-(-batches // config.gradient_accumulation_steps),
                     total_steps=total_steps(config, batches))


def crop_to(size: Size, granularity: int) -> Size | None:
    """The size the trainer trains an image of `size` at (loradeck.trainer.train.data.scan crops the same
    way); None when it is smaller than one granule and is skipped."""
    w, h = size[0] - size[0] % granularity, size[1] - size[1] % granularity
    return (w, h) if w >= granularity and h >= granularity else None


def dataset_sizes(project) -> dict[str, Size]:
    """{file name: (width, height)} of the project's training images in dataset/: from the prep manifest
    where prep made the file, else from the image's header (an image placed there by hand)."""
    recorded = {e.get("output"): (e.get("width"), e.get("height")) for e in load_manifest(project).values()}
    sizes = {}
    for path in dataset_images(project):
        size = recorded.get(path.name)
        if not (isinstance(size, tuple) and all(isinstance(s, int) for s in size)):
            size = _header_size(path)
        if size is not None:
            sizes[path.name] = size
    return sizes


def _header_size(path: Path) -> Size | None:
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # an unreadable image is skipped by the trainer too
        return None
