"""Helpers shared by the captioning tests."""

from __future__ import annotations

import random
from pathlib import Path

TINY = "synthetic:blip-tiny"


def write_images(folder: Path, n: int, seed: int = 0, prefix: str = "img") -> list[Path]:
    """`n` small, different pictures (PNG and JPEG, a few sizes)."""
    from PIL import Image, ImageDraw

    rnd = random.Random(seed)
    paths = []
    for i in range(n):
        w, h = rnd.choice([(48, 48), (64, 48), (40, 72)])
        im = Image.new("RGB", (w, h), tuple(rnd.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(im)
        for _ in range(4):
            x, y = rnd.randrange(w), rnd.randrange(h)
            draw.rectangle([x, y, x + rnd.randrange(4, 24), y + rnd.randrange(4, 24)],
                           fill=tuple(rnd.randrange(256) for _ in range(3)))
        path = folder / f"{prefix}_{i:03d}{'.png' if i % 2 else '.jpg'}"
        im.save(path)
        paths.append(path)
    return paths
