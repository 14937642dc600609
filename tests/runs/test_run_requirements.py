"""A run that would fail while loading (missing base model, missing package) is refused up front:
no run folder, no process, one clear line."""

from __future__ import annotations

import importlib.util

import pytest

from trainer import runs
from trainer.errors import ConfigError, ModelError


def run_dirs(project):
    return sorted(p.name for p in project.runs.iterdir()) if project.runs.is_dir() else []


def test_a_hub_model_missing_from_the_cache_offline_is_refused_before_the_run_exists(project, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="some/missing-id is not in the Hugging Face cache") as err:
        runs.create_run(project, {"base_model": "some/missing-id", "max_train_steps": 1})
    assert "hf download some/missing-id" in err.value.one_line()
    assert run_dirs(project) == []


def test_a_missing_local_model_path_is_refused_before_the_run_exists(project, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        runs.create_run(project, {"base_model": str(tmp_path / "no-such-model"), "max_train_steps": 1})
    assert run_dirs(project) == []


@pytest.mark.parametrize("knob, package", [({"attention": "xformers"}, "xformers"),
                                           ({"optimizer": "adamw8bit"}, "bitsandbytes")])
def test_a_knob_whose_package_is_missing_is_refused_before_the_run_exists(project, monkeypatch, knob, package):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ConfigError, match=package):
        runs.create_run(project, {**knob, "max_train_steps": 1})
    assert run_dirs(project) == []


def test_cli_train_with_a_missing_model_fails_with_one_line_and_no_run(project, cli, root):
    proc = cli("train", "toy", "--base-model", "some/missing-id", "--steps", "1", root=root,
               env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: base model some/missing-id")
    assert run_dirs(project) == []


def test_resume_of_a_run_whose_model_is_still_missing_is_refused_without_starting_it(project, monkeypatch):
    from huggingface_hub import constants

    files = runs.create_run(project, {"max_train_steps": 2})  # synthetic:tiny
    text = files.config.read_text().replace('"synthetic:tiny"', '"some/missing-id"')
    files.config.write_text(text)
    from trainer.events import EventWriter
    writer = EventWriter(files.events)
    writer.emit("run_started", run_id=files.run_id, config={}, environment={})
    writer.emit("run_finished", status="failed", message="base model some/missing-id is missing")
    writer.close()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(runs, "launch", lambda *a, **k: pytest.fail("resume started a trainer"))
    with pytest.raises(ModelError, match="some/missing-id is not in the Hugging Face cache"):
        runs.resume(files)
    assert not files.launch.exists()


def test_a_failed_foreground_run_with_json_still_says_why_on_stderr(project, fake_trainer, monkeypatch, capsys):
    import json

    from trainer.cli import main as cli_main

    monkeypatch.setenv("FAKE_FAIL", "1")
    code = cli_main(["train", "toy", "--steps", "2", "--resolution", "64", "--json"])
    captured = capsys.readouterr()
    assert code == 1 and json.loads(captured.out)["state"] == "failed"
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: run ")
    assert "failed: loss is nan" in captured.err


def test_a_config_path_that_is_a_folder_says_so(project, tmp_path):
    from trainer import run_config

    with pytest.raises(ConfigError, match="is a folder, not a TOML file"):
        run_config.resolve(project, {}, tmp_path)
    assert run_dirs(project) == []
