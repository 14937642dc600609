"""Creating a run folder and resolving its config: defaults < project.toml < --config < flags."""

from __future__ import annotations

import re
import tomllib

import pytest

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.config.train_config import FIELD_NAMES, TrainConfig
from loradeck.trainer.errors import ConfigError, LoradeckError
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.train import step_count


def test_each_layer_overrides_the_one_below(project, tmp_path):
    settings.update(project.settings_file, "train", {"rank": 8, "alpha": 4.0, "seed": 7, "batch_size": 2})
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text("rank = 12\nseed = 9\nresolution = 64\n")
    resolved = run_config.resolve(project, {"seed": 11}, cfg_file)
    cfg = resolved.config
    assert cfg.base_model == "synthetic:tiny"                 # project's [project] base_model
    assert (cfg.batch_size, cfg.alpha) == (2, 4.0)             # project.toml [train]
    assert (cfg.rank, cfg.resolution) == (12, 64)              # --config beats [train]
    assert cfg.seed == 11                                      # flags beat everything
    assert cfg.learning_rate == TrainConfig().learning_rate    # untouched default
    assert resolved.sources["seed"] == "command line"
    assert resolved.sources["rank"].startswith("--config")
    assert resolved.sources["alpha"] == "project.toml [train]"
    assert resolved.sources["learning_rate"] == "default"


def test_base_model_flag_beats_project_base_model(project):
    cfg = run_config.resolve(project, {"base_model": "synthetic:sd15"}).config
    assert cfg.base_model == "synthetic:sd15"


def test_a_higher_layer_naming_epochs_replaces_a_lower_steps_limit(project):
    settings.update(project.settings_file, "train", {"max_train_steps": 500})
    cfg = run_config.resolve(project, {"max_train_epochs": 3}).config
    assert (cfg.max_train_steps, cfg.max_train_epochs) == (None, 3)
    assert step_count.total_steps(cfg, 3) == 3 * 3  # 3 batches an epoch, 3 epochs
    cfg = run_config.resolve(project, {"max_train_steps": 4}).config
    assert (cfg.max_train_steps, step_count.total_steps(cfg, 3)) == (4, 4)


def test_unknown_key_in_a_config_file_is_refused_by_name(project, tmp_path):
    cfg_file = tmp_path / "run.toml"
    cfg_file.write_text("rank = 4\nrnak = 8\nlearnin_rate = 1e-4\n")
    with pytest.raises(ConfigError, match="learnin_rate, rnak"):
        run_config.resolve(project, {}, cfg_file)


def test_bad_values_from_any_layer_are_reported_together(project):
    with pytest.raises(ConfigError) as e:
        run_config.resolve(project, {"rank": 0, "mixed_precision": "fp8"})
    assert "rank" in str(e.value) and "mixed_precision" in str(e.value)


def test_missing_or_broken_config_file_is_a_clear_error(project, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        run_config.resolve(project, {}, tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("rank = = 4\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        run_config.resolve(project, {}, broken)


def test_local_base_model_path_is_stored_absolute(project, tmp_path, monkeypatch):
    model = tmp_path / "models" / "my-model"
    model.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    cfg = run_config.resolve(project, {"base_model": "models/my-model"}).config
    assert cfg.base_model == str(model.resolve())


def test_create_run_writes_the_resolved_config_and_dataset_table(project):
    files = runs.create_run(project, {"max_train_steps": 4, "resolution": 64, "sample_prompts": ["a sks toy"]})
    assert files.dir.parent == project.runs
    assert re.fullmatch(r"\d{8}-\d{6}-\d{3}[0-9a-f]", files.run_id)
    doc = tomllib.loads(files.config.read_text())
    assert set(doc) - {"dataset"} <= set(FIELD_NAMES)
    assert doc["max_train_steps"] == 4 and "max_train_epochs" not in doc  # None is left out
    assert doc["dataset"] == {"project_dir": str(project.path.resolve()), "caption_extension": ".txt",
                              "trigger_word": "sks"}
    cfg, dataset = run_config.read_run_config(files.config)
    assert cfg.max_train_steps == 4 and cfg.max_train_epochs is None and cfg.resolution == 64
    assert cfg.sample_prompts == ["a sks toy"] and cfg.base_model == "synthetic:tiny"
    assert dataset["trigger_word"] == "sks"


def test_run_ids_sort_by_creation_and_are_unique(project):
    a = runs.create_run(project, {"max_train_steps": 1})
    b = runs.create_run(project, {"max_train_steps": 1})
    assert a.run_id != b.run_id
    assert runs.new_run_id(1_700_000_000.001) < runs.new_run_id(1_700_000_000.002) < runs.new_run_id(1_700_000_001)
    assert [f.run_id for f in runs.run_folders(project)] == sorted([a.run_id, b.run_id])


def test_empty_dataset_is_refused_before_any_run_folder_exists(root):
    from loradeck.trainer.dataset.project import create_project

    empty = create_project("empty", root, base_model="synthetic:tiny")
    with pytest.raises(LoradeckError, match="dataset has no images"):
        runs.create_run(empty, {"max_train_steps": 1})
    assert list(empty.runs.iterdir()) == []


def test_a_runs_own_config_toml_can_be_reused_as_config(project):
    first = runs.create_run(project, {"rank": 5, "max_train_steps": 3})
    resolved = run_config.resolve(project, {}, first.config)
    assert (resolved.config.rank, resolved.config.max_train_steps) == (5, 3)
    assert any("[dataset] ignored" in n for n in resolved.notes)


def test_find_run_by_prefix_latest_and_ambiguity(project):
    a = runs.create_run(project, {"max_train_steps": 1})
    b = runs.create_run(project, {"max_train_steps": 1})
    assert runs.find_run(project, b.run_id) == b
    assert runs.find_run(project, "latest") == b == runs.latest_run(project)
    with pytest.raises(LoradeckError, match="no run"):
        runs.find_run(project, "1999")
    prefix = a.run_id[:9]
    if b.run_id.startswith(prefix):
        with pytest.raises(LoradeckError, match="ambiguous"):
            runs.find_run(project, prefix)
    assert isinstance(runs.find_run(project, a.run_id), RunFiles)


def test_a_bad_value_names_the_layer_it_came_from(project, tmp_path):
    settings.update(project.settings_file, "train", {"keep_tokens": -1})
    cfg_file = tmp_path / "kohya.toml"
    cfg_file.write_text("[network]\nnetwork_dim = 4.5\n")
    with pytest.raises(ConfigError) as e:
        run_config.resolve(project, {"batch_size": 0}, cfg_file)
    message = str(e.value)
    assert f"rank: expected a whole number, got 4.5 (from --config {cfg_file})" in message
    assert "keep_tokens: must not be negative (from project.toml [train])" in message
    assert "batch_size: must be at least 1 (from command line)" in message
