"""Fixtures for the run-management tests: a tiny project with a few 64 px images, a fake trainer."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from PIL import Image

from loradeck.trainer.dataset.project import create_project
from tests.fake_trainer import use_fake_trainer


def write_images(dataset: Path, n: int = 3, size: int = 64) -> None:
    """n small images with .txt captions, straight into dataset/ (as `loradeck prep` leaves them)."""
    dataset.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = ((60 * i) % 256, (120 + 40 * i) % 256, (200 - 50 * i) % 256)
        image = Image.new("RGB", (size, size), colour)
        for x in range(size // 4, size // 2):
            for y in range(size // 4, size // 2 + i * 4):
                image.putpixel((x, y), (255, 255, 255))
        image.save(dataset / f"img_{i}.png")
        (dataset / f"img_{i}.txt").write_text(f"sks, a toy, shape {i}, plain background")


@pytest.fixture
def project(root):
    """A project on synthetic:tiny with three 64 px captioned images in dataset/."""
    proj = create_project("toy", root, trigger_word="sks", base_model="synthetic:tiny")
    write_images(proj.dataset)
    return proj


@pytest.fixture
def fake_trainer(monkeypatch):
    """Launch tests.fake_trainer instead of loradeck.trainer.train.process (same contract, no torch)."""
    return use_fake_trainer(monkeypatch, step_seconds=0.05)


@pytest.fixture
def reap():
    """Kill (by pid, group-wide) any process a test started and left running."""
    started: list[int] = []
    yield started.append
    for pid in started:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
