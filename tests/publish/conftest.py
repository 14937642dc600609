"""Fixtures for the publishing tests: a saved tiny base model, real LoRA files, a finished fake run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.publish.tiny_models import KOHYA_TARGETS, save_tiny_base, write_lora


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny SD-1.x-shaped diffusers folder: the base model for load checks (built once)."""
    return save_tiny_base(tmp_path_factory.mktemp("base") / "tiny-sd")


@pytest.fixture(scope="session")
def lora_bytes(tmp_path_factory) -> bytes:
    """The bytes of a real kohya LoRA (attention + ff + 1x1-conv + text encoder), built once."""
    path = tmp_path_factory.mktemp("lora") / "mylora.safetensors"
    write_lora(path, targets=KOHYA_TARGETS, text_encoder=True, output_name="mylora", trigger="sks")
    return path.read_bytes()


@pytest.fixture
def lora_path(tmp_path, lora_bytes) -> Path:
    path = tmp_path / "mylora.safetensors"
    path.write_bytes(lora_bytes)
    return path


@pytest.fixture
def shared(tmp_path) -> Path:
    d = tmp_path / "shared"
    d.mkdir()
    return d


@pytest.fixture(autouse=True)
def isolated_user_config(tmp_path, monkeypatch):
    """No test reads the real ~/.config/loradeck/config.toml."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("LORADECK_CONFIG", raising=False)


def _png(color: tuple[int, int, int]) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    return buf.getvalue()


def make_run(project, lora_bytes: bytes, *, base_model: str, run_id: str = "20261126-080000-ab12",
             output_name: str = "mylora", samples: bool = True, trigger: str = "sks") -> Path:
    """A finished run folder as the trainer leaves it: config.toml, events, samples, final LoRA."""
    import tomlkit

    from loradeck.trainer.config.train_config import TrainConfig

    run_dir = project.runs / run_id
    (run_dir / "samples").mkdir(parents=True)
    cfg = TrainConfig(base_model=base_model, output_name=output_name, rank=4, alpha=2.0, max_train_steps=100,
                      resolution=64).to_dict()
    doc = tomlkit.document()
    for k, v in cfg.items():
        if v is not None:
            doc.add(k, v)
    dataset = tomlkit.table()
    dataset.add("project_dir", str(project.path))
    dataset.add("caption_extension", ".txt")
    dataset.add("trigger_word", trigger)
    doc.add("dataset", dataset)
    (run_dir / "config.toml").write_text(tomlkit.dumps(doc))
    events = []
    if samples:
        for step, color in ((50, (255, 0, 0)), (100, (0, 0, 255))):
            p = run_dir / "samples" / f"step-{step:06d}-0.png"
            p.write_bytes(_png(color))
            events.append({"type": "sample", "time": time.time(), "step": step, "path": str(p), "prompt": "sks"})
    events.append({"type": "run_finished", "time": time.time(), "status": "completed",
                   "output": str(run_dir / f"{output_name}.safetensors")})
    (run_dir / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run_dir / f"{output_name}.safetensors").write_bytes(lora_bytes)
    return run_dir


@pytest.fixture
def project(root):
    from loradeck.trainer.dataset.project import create_project

    return create_project("heroes", root, trigger_word="sks")
