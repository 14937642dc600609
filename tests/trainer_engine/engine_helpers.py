"""Helpers for training-engine tests and benchmarks (no pytest import): datasets, run folders, runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def write_images(folder: Path, n: int, size=(64, 64), *, seed: int = 0, captions=None) -> list[Path]:
    """`n` small synthetic images (coloured ellipses) with caption sidecars."""
    import random

    from PIL import Image, ImageDraw

    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        w, h = size[i % len(size)] if isinstance(size, list) else size
        im = Image.new("RGB", (w, h), tuple(rnd.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(im)
        for _ in range(5):
            x, y = rnd.randrange(w), rnd.randrange(h)
            draw.ellipse([x, y, x + rnd.randrange(4, w // 2), y + rnd.randrange(4, h // 2)],
                         fill=tuple(rnd.randrange(256) for _ in range(3)))
        path = folder / f"img_{i:03d}.png"
        im.save(path)
        caption = captions[i % len(captions)] if captions else f"red circle, style {i % 3}, blue"
        (folder / f"img_{i:03d}.txt").write_text(caption + "\n")
        paths.append(path)
    return paths


def write_run(run_dir: Path, project_dir: Path, *, trigger: str = "", image_repeats: dict | None = None,
              **overrides) -> Path:
    """A run folder with config.toml as loradeck.trainer.runs.lifecycle writes it: TrainConfig keys + [dataset]."""
    import tomlkit

    from loradeck.trainer.config.train_config import from_mapping

    base = dict(max_train_steps=4, max_train_epochs=None, batch_size=2, rank=4, alpha=4.0, resolution=64,
                mixed_precision="no", learning_rate=1e-3, output_name="out")
    base.update(overrides)
    cfg = from_mapping(base)
    doc = {k: v for k, v in cfg.to_dict().items() if v is not None}
    doc["dataset"] = {"project_dir": str(project_dir), "caption_extension": ".txt", "trigger_word": trigger}
    if image_repeats:
        doc["dataset"]["image_repeats"] = image_repeats
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(tomlkit.dumps(doc))
    return run_dir


def run_trainer(run_dir: Path, *extra: str, env: dict | None = None, timeout: float = 300):
    """`python -m trainer.train.process RUN_DIR ...` as trainer.runs.lifecycle launches it; returns CompletedProcess."""
    full_env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([PYTHON, "-m", "loradeck.trainer.train.process", str(run_dir), *extra], capture_output=True,
                          text=True, env=full_env, timeout=timeout, cwd=REPO)


def events_of(run_dir: Path, type_: str | None = None) -> list[dict]:
    from loradeck.trainer.events import read_all

    events = read_all(run_dir / "events.jsonl")
    return [e for e in events if type_ is None or e["type"] == type_]


def train_in_process(run_dir: Path, *extra: str) -> int:
    """Run the trainer process's main() in this interpreter (no import cost per run); its exit code."""
    import signal

    from loradeck.trainer.train import process as train_process

    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        return train_process.main([str(run_dir), *extra])
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])
