"""Fixtures of the run-screen tests (helpers live in tui_runs_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loradeck.trainer.dataset.project import Project, create_project
from tests.fake_trainer import command as fake_trainer_command
from tests.fake_trainer import use_fake_trainer


@pytest.fixture
def project(root: Path) -> Project:
    return create_project("cats", root, base_model="synthetic:tiny")


@pytest.fixture
def trainable(project: Project) -> Project:
    """The project with a few prepared 64 px images and captions in dataset/."""
    from PIL import Image

    for i, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 40)]):
        Image.new("RGB", (64, 64), colour).save(project.dataset / f"img{i}.png")
        (project.dataset / f"img{i}.txt").write_text(f"a photo of a cat, colour {i}")
    return project


@pytest.fixture
def fake_trainer(monkeypatch):
    """Runs launched through loradeck.trainer.runs.lifecycle start the fake trainer (tests/fake_trainer.py).

    Yields a dict whose `steps` / `step_seconds` the test may change before launching.
    """
    from loradeck.trainer.runs import lifecycle as runs

    use_fake_trainer(monkeypatch)
    opts = {"steps": 1000, "step_seconds": 0.05}
    launched: list = []

    def build_command(run_dir, *, resume=False, gpus=1, mixed_precision="no", python=None):
        launched.append(run_dir)
        return fake_trainer_command(run_dir, resume=resume, steps=opts["steps"], step_seconds=opts["step_seconds"])

    monkeypatch.setattr(runs, "build_command", build_command)
    opts["launched"] = launched
    yield opts
    # Leave no trainer behind: stop whatever is still running.
    from loradeck.trainer.runs.files import RunFiles
    from loradeck.trainer.runs.states import ACTIVE

    for run_dir in launched:
        files = RunFiles(Path(run_dir))
        try:
            if runs.run_state(files) in ACTIVE:
                runs.signal_run(files, 9)
        except Exception:
            pass
