"""A run that would fail while loading (missing base model, missing package) is refused up front:
no run folder, no process, one clear line."""

from __future__ import annotations

import pytest

from loradeck.trainer.errors import ConfigError, ModelError
from loradeck.trainer.runs import lifecycle as runs


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


def without(monkeypatch, *packages):
    """This box, as if `packages` were not installed."""
    from loradeck.trainer.train import optional_packages

    real = optional_packages.installed
    monkeypatch.setattr(optional_packages, "installed", lambda name: name not in packages and real(name))


def test_adamw8bit_without_bitsandbytes_is_refused_naming_the_extra(project, monkeypatch):
    without(monkeypatch, "bitsandbytes")
    with pytest.raises(ConfigError, match="optimizer adamw8bit needs bitsandbytes") as err:
        runs.create_run(project, {"optimizer": "adamw8bit", "max_train_steps": 1})
    assert "pip install 'loradeck[gpu]'" in err.value.hint
    assert run_dirs(project) == []


def test_xformers_without_the_package_becomes_sdpa_with_a_note(project, monkeypatch):
    without(monkeypatch, "xformers")
    resolved = runs.run_config.resolve(project, {"attention": "xformers", "max_train_steps": 1})
    files = runs.create_run_from(project, resolved)
    assert files.config.is_file()  # created: not refused
    [note] = [n for n in resolved.notes if "xformers" in n]
    assert "using sdpa instead" in note and "loradeck[gpu]" in note
    assert not any(n.startswith("dataset: ") and "xformers" in n for n in resolved.notes)  # said once


def test_a_pasted_kohya_config_with_xformers_and_adamw8bit_is_refused_for_bitsandbytes_only(
        project, monkeypatch, tmp_path, capsys):
    """The seed's kohya config on a box with neither package: the refusal names bitsandbytes and
    the extra; with AdamW instead it trains, on sdpa, and says so."""
    from loradeck.trainer.cli import main as cli_main
    from tests.runs.test_kohya_config import ISSUE_EXAMPLE

    without(monkeypatch, "xformers", "bitsandbytes")
    pasted = tmp_path / "kohya.toml"
    pasted.write_text(ISSUE_EXAMPLE)
    assert cli_main(["train", "toy", "--config", str(pasted), "--detach"]) == 1
    err = capsys.readouterr().err
    assert "bitsandbytes" in err and "loradeck[gpu]" in err and "xformers" not in err
    assert run_dirs(project) == []
    pasted.write_text(ISSUE_EXAMPLE.replace('"AdamW8bit"', '"AdamW"'))
    resolved = runs.run_config.resolve(project, {"max_train_steps": 1}, pasted)
    runs.create_run_from(project, resolved)
    assert any("using sdpa instead" in n for n in resolved.notes)


def test_check_and_preflight_show_the_package_problems(project, monkeypatch):
    from loradeck.trainer.config.train_config import TrainConfig
    from loradeck.trainer.dataset import preflight

    without(monkeypatch, "xformers", "bitsandbytes")
    report = preflight.check(project, TrainConfig(base_model="synthetic:tiny", attention="xformers",
                                                  optimizer="adamw8bit", resolution=64))
    by_level = {p["level"]: p["message"] for p in report["problems"] if p["code"] == "package"}
    assert "using sdpa instead" in by_level["warning"]
    assert "bitsandbytes" in by_level["error"] and not report["ok"]


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
    from loradeck.trainer.events import EventWriter
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

    from loradeck.trainer.cli import main as cli_main

    monkeypatch.setenv("FAKE_FAIL", "1")
    code = cli_main(["train", "toy", "--steps", "2", "--resolution", "64", "--json"])
    captured = capsys.readouterr()
    assert code == 1 and json.loads(captured.out)["state"] == "failed"
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: run ")
    assert "failed: loss is nan" in captured.err


def test_a_config_path_that_is_a_folder_says_so(project, tmp_path):
    from loradeck.trainer.config import resolve as run_config

    with pytest.raises(ConfigError, match="is a folder, not a TOML file"):
        run_config.resolve(project, {}, tmp_path)
    assert run_dirs(project) == []
