"""Fixtures for the training engine: one synthetic tiny model per session, tiny datasets, run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from engine_helpers import PYTHON, REPO, events_of, run_trainer, train_in_process, write_images, write_run  # noqa: F401


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """synthetic:tiny saved once as a diffusers folder (the tests load it like a user's local model)."""
    from loradeck.trainer.train import synthetic_sd

    cache = os.environ.get("LORADECK_TEST_MODEL_CACHE")
    out = Path(cache) / "tiny" if cache else tmp_path_factory.mktemp("models") / "tiny"
    if not (out / "model_index.json").exists():
        synthetic_sd.save("tiny", out)
    return out


@pytest.fixture
def project_dir(tmp_path) -> Path:
    p = tmp_path / "proj"
    write_images(p / "dataset", 4)
    return p


@pytest.fixture
def make_run(tmp_path, project_dir, tiny_model):
    """make_run(name, **config) -> a run folder on the tiny model and the 4-image project."""
    def make(name: str = "run", *, project=None, **overrides) -> Path:
        overrides.setdefault("base_model", str(tiny_model))
        return write_run(tmp_path / "runs" / name, project or project_dir, **overrides)
    return make
