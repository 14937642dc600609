"""Fixtures for the captioning tests: the tiny random BLIP (built once per session) and projects."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import TINY, write_images


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory) -> Path:
    """A private loradeck cache for the session (subprocesses inherit it), so tests never share
    or reuse a user's cached build."""
    cache = tmp_path_factory.mktemp("loradeck-cache")
    # One torch thread: the tiny model is all per-op overhead, and on a shared CI box two spinning
    # intra-op threads slow it several times over. Subprocesses inherit both variables.
    saved = {k: os.environ.get(k) for k in ("LORADECK_CACHE", "OMP_NUM_THREADS")}
    os.environ["LORADECK_CACHE"] = str(cache)
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield cache
    torch.set_num_threads(threads)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_captioner(model_cache):
    """The synthetic tiny BLIP, loaded once on the CPU."""
    from loradeck.trainer.captions.blip_model import load_captioner

    return load_captioner(TINY, device="cpu")


@pytest.fixture
def make_project(root):
    """make_project(n_images, name=..., **settings) -> Project with `n_images` in dataset/."""
    from loradeck.trainer.dataset.project import create_project

    def make(n: int, name: str = "cap", **settings):
        project = create_project(name, root, **settings)
        write_images(project.dataset, n)
        return project

    return make
