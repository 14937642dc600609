"""Aspect-ratio buckets in kohya's manner, and which bucket an image goes to.

A bucket is a (width, height) whose sides are multiples of `step` and whose area is at most
resolution². Prep resizes and centre-crops every image to exactly its bucket, so a prepared
image's pixel size IS its bucket and the trainer batches images of equal size together.

Rules (docs/layout.md repeats them for users):
- step: the configured bucket_step, but at most resolution/8 (rounded down to a multiple of 8,
  at least 8): 64 at 512 px, 8 at 64 px, so tiny test resolutions still get several buckets.
- sides: min side at most resolution/2, max side at most 2 x resolution (kohya's 256/1024 at 512).
- Downscale only. An image goes to the standard bucket whose aspect ratio is closest to its own;
  if that bucket is larger than the image in either direction (it would need upscaling), the image
  gets its own smaller bucket instead: its size scaled to area <= resolution² and rounded down to
  the step (kohya's `bucket_no_upscale`; below one step, to a multiple of 8). Such images are
  flagged `small` and preflight warns; one with a side under 8 px cannot be trained on at all.
- square_crop: one bucket, resolution x resolution (or the largest square the image fills).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache


class ImageTooSmall(ValueError):
    """An image with a side under 8 px: no bucket can hold it without upscaling."""


@dataclass(frozen=True)
class BucketSpec:
    resolution: int
    step: int
    min_side: int
    max_side: int
    square: bool = False

    def key(self) -> str:
        return f"r{self.resolution}-s{self.step}-{self.min_side}-{self.max_side}-{'sq' if self.square else 'ar'}"


@dataclass(frozen=True)
class Fit:
    """Where one image goes: the bucket, the size to resize to before the centre crop."""

    width: int
    height: int
    resize_to: tuple[int, int]
    small: bool  # the image could not fill a standard bucket without upscaling

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def effective_step(resolution: int, bucket_step: int = 64) -> int:
    cap = max(8, (resolution // 8) // 8 * 8)
    return max(8, min(bucket_step, cap) // 8 * 8)


def make_spec(resolution: int, *, bucket_step: int = 64, min_side: int = 256, max_side: int = 1024,
              square: bool = False) -> BucketSpec:
    """The bucket rules for one resolution, with the scaling rules above applied."""
    if resolution < 8:
        raise ValueError("resolution must be at least 8")
    step = effective_step(resolution, bucket_step)
    lo = max(step, min(min_side, resolution // 2) // step * step)
    hi = max(lo, min(max_side, resolution * 2) // step * step)
    return BucketSpec(resolution, step, lo, hi, square)


@lru_cache(maxsize=32)
def standard_buckets(spec: BucketSpec) -> tuple[tuple[int, int], ...]:
    """Every bucket of `spec`, sorted by aspect ratio (width / height)."""
    res_side = spec.resolution // spec.step * spec.step
    if spec.square:
        return ((res_side, res_side),)
    max_area = spec.resolution * spec.resolution
    found = {(res_side, res_side)}
    width = spec.min_side
    while width <= spec.max_side:
        height = min(spec.max_side, (max_area // width) // spec.step * spec.step)
        if height >= spec.min_side:
            found.add((width, height))
            found.add((height, width))
        width += spec.step
    return tuple(sorted(found, key=lambda wh: (wh[0] / wh[1], wh[0])))


def _resize_for(width: int, height: int, bw: int, bh: int) -> tuple[int, int]:
    """The smallest size with the image's aspect ratio that covers bw x bh."""
    scale = max(bw / width, bh / height)
    return max(bw, round(width * scale)), max(bh, round(height * scale))


def fit(width: int, height: int, spec: BucketSpec) -> Fit:
    """Choose the bucket for an image of width x height (already upright)."""
    if width <= 0 or height <= 0:
        raise ValueError("image has no pixels")
    aspect = width / height
    if spec.square:
        candidates = standard_buckets(spec)
    else:
        candidates = sorted(standard_buckets(spec), key=lambda wh: (abs(wh[0] / wh[1] - aspect), -wh[0] * wh[1]))
    bw, bh = candidates[0]
    if bw <= width and bh <= height:
        return Fit(bw, bh, _resize_for(width, height, bw, bh), small=False)
    # Would need upscaling: the image's own bucket, scaled down to the area limit if needed.
    if spec.square:
        side = _floor_side(min(width, height), spec.step)
        return Fit(side, side, _resize_for(width, height, side, side), small=True)
    scale = min(1.0, math.sqrt(spec.resolution * spec.resolution / (width * height)))
    bw = min(_floor_side(width * scale, spec.step), spec.max_side)
    bh = min(_floor_side(height * scale, spec.step), spec.max_side)
    return Fit(bw, bh, _resize_for(width, height, bw, bh), small=True)


def _floor_side(value: float, step: int) -> int:
    """Round a side down to the step; below one step, down to a multiple of 8 (what the VAE needs)."""
    side = int(value) // step * step or int(value) // 8 * 8
    if side < 8:
        raise ImageTooSmall(f"too small to train on: a side of {int(value)} px (at least 8 needed)")
    return side


def label(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"
