"""`loradeck demo`: a small, ready project that every screen can work with on a CPU.

Twelve images are drawn locally with PIL (shapes over gradients, at a few sizes and aspect ratios),
some with sidecar captions and some without, then go through the real engine: import into
originals/, prep at 128 px into dataset/. The base model is `synthetic:tiny` (offline, trains in
seconds) and the captioner `synthetic:blip-tiny`. A second folder, `demo-extra/`, holds more
images and one broken file, to try the import (and see a refused file with its reason).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.dataset.importer import import_paths
from loradeck.trainer.dataset.prep import prep_project
from loradeck.trainer.dataset.project import Project, create_project, resolve_root

DEMO_NAME = "demo"
DEMO_TRIGGER = "zxq style"
EXTRA_DIR = "demo-extra"
RESOLUTION = 128

_COLOURS = {"red": (220, 50, 47), "blue": (38, 139, 210), "green": (133, 153, 0), "yellow": (181, 137, 0),
            "magenta": (211, 54, 130), "cyan": (42, 161, 152), "orange": (203, 75, 22), "violet": (108, 113, 196)}
_SHAPES = ("circle", "square", "triangle", "stripes", "ring", "diamond")
_SIZES = ((160, 160), (192, 128), (128, 192), (256, 256), (224, 160))

# Training defaults that finish in well under a minute on a CPU.
DEMO_TRAIN = {"base_model": "synthetic:tiny", "resolution": RESOLUTION, "max_train_steps": 40,
              "max_train_epochs": None, "rank": 4, "alpha": 4.0, "mixed_precision": "no",
              "learning_rate": 1e-3, "sample_prompts": [f"{DEMO_TRIGGER}, a red circle"],
              "sample_every_steps": 20, "sample_steps": 4, "save_every_steps": 20}


def draw_image(seed: int, size: tuple[int, int]):
    """One picture: a two-colour gradient background with a shape; returns (PIL image, caption)."""
    rng = random.Random(seed)
    names = list(_COLOURS)
    back_a, back_b, fore = rng.sample(names, 3)
    shape = _SHAPES[seed % len(_SHAPES)]
    w, h = size
    a, b = _COLOURS[back_a], _COLOURS[back_b]
    image = Image.new("RGB", size)
    px = image.load()
    for y in range(h):
        for x in range(w):
            t = (x / w + y / h) / 2
            px[x, y] = tuple(int(a[i] * (1 - t) + b[i] * t) for i in range(3))
    draw = ImageDraw.Draw(image)
    colour = _COLOURS[fore]
    cx, cy, r = w // 2 + rng.randint(-w // 8, w // 8), h // 2 + rng.randint(-h // 8, h // 8), min(w, h) // 3
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "stripes":
        for x0 in range(0, w, 16):
            draw.rectangle((x0, 0, x0 + 7, h), fill=colour)
    elif shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=colour, width=max(3, r // 4))
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=colour)
    caption = f"{DEMO_TRIGGER}, {fore} {shape}, {back_a} and {back_b} gradient background"
    return image, caption


def write_images(folder: Path, count: int, *, first_seed: int = 0, caption_every: int = 3,
                 prefix: str = "shape") -> list[Path]:
    """Draw `count` images into `folder`; every image except each `caption_every`-th gets a .txt
    caption beside it. Returns the image paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        seed = first_seed + i
        image, caption = draw_image(seed, _SIZES[seed % len(_SIZES)])
        fmt = "JPEG" if seed % 4 == 3 else "PNG"
        path = folder / f"{prefix}_{seed:02d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        image.save(path, fmt)
        if caption_every and (i % caption_every) != caption_every - 1:
            path.with_suffix(".txt").write_text(caption + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def write_extra(folder: Path) -> None:
    """More images to import by hand, plus a truncated file the import refuses with a reason."""
    write_images(folder, 4, first_seed=100, caption_every=2, prefix="extra")
    good = (folder / "extra_100.png").read_bytes()
    (folder / "broken_download.png").write_bytes(good[: len(good) // 3])
    (folder / "notes.md").write_text("not an image\n", encoding="utf-8")


def create_demo(root: str | os.PathLike | None = None, *, name: str = DEMO_NAME, count: int = 12) -> Project:
    """Create the demo project (imported and prepared) and the demo-extra folder; an existing
    demo project is reused as it is."""

    base = resolve_root(root)
    project = Project(base, name)
    extra = base / EXTRA_DIR
    if not extra.exists():
        write_extra(extra)
    if project.exists():
        return project
    project = create_project(name, base, trigger_word=DEMO_TRIGGER, base_model="synthetic:tiny",
                             description="made by `loradeck demo`: drawn shapes, synthetic:tiny")
    settings.update(project.settings_file, "prep", {"resolution": RESOLUTION, "bucket_min_side": 64,
                                                     "bucket_max_side": 256, "bucket_step": 64})
    settings.update(project.settings_file, "train", DEMO_TRAIN)
    source = Path(tempfile.mkdtemp(prefix="loradeck-demo-"))
    try:
        write_images(source, count)
        import_paths(project, [source])
    finally:
        shutil.rmtree(source, ignore_errors=True)
    prep_project(project, workers=1)
    return project
