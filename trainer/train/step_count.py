"""How many optimizer steps a run takes: the one formula behind `loradeck check`, the train form's step
line and the trainer's loop (which writes it to run_started and status.json).

An epoch shows every image `repeats` x its kohya folder repeats times. Images are batched per bucket
(a prepared image's pixel size IS its bucket, loradeck.trainer.dataset.buckets), so each bucket ends with
its own partial batch: buckets of 5, 3 and 1 images at batch 2 make 3 + 2 + 1 = 6 batches, not
ceil(9 / 2) = 5. With several processes each takes its share of the batches per epoch. Gradient
accumulation folds micro-batches into optimizer steps across epoch boundaries; `--steps` wins over
`--epochs`. loradeck.trainer.train.data.BatchPlan orders the batches this module counts.

No torch and no image decoding here: the TUI imports it. `dataset_sizes` reads sizes from the prep
manifest and only opens (the header of) an image prep did not record. The trainer counts the sizes it
reads itself, cropped to the model's granularity (64 px for SD 1.x, 32 for SDXL, 4 for synthetic:tiny);
prep's bucket sizes are multiples of the bucket step (64 at 512 px and above), so the two agree
wherever that step is a multiple of the granularity: always at 512 px and above.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

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
    images = [(size, image_repeats.get(Path(name).stem, 1)) for name, size in sizes.items()]
    members = bucket_members(images, config.repeats)
    weighted = sum(max(1, int(n)) for _, n in images)
    if not images:
        return StepCount(0, 0, 0, 0, 0, int(config.max_train_steps or 0))
    batches = batches_per_epoch(members.values(), batch_size=config.batch_size, num_processes=max(1, config.gpus))
    return StepCount(images=len(images), weighted_images=weighted, buckets=len(members), batches_per_epoch=batches,
                     steps_per_epoch=-(-batches // config.gradient_accumulation_steps),
                     total_steps=total_steps(config, batches))


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
    from PIL import Image  # only for images prep did not record; reads the header, not the pixels

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # an unreadable image is skipped by the trainer too
        return None
