"""`--config` with a kohya train_network.py TOML: mapped keys, accepted no-ops, refused keys."""

from __future__ import annotations

import pytest

from loradeck.trainer.config import kohya as kohya_config
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.errors import ConfigError

ISSUE_EXAMPLE = """
[general]
enable_bucket = true
mixed_precision = "fp16"
xformers = true
gradient_checkpointing = true
[network]
network_module = "networks.lora"
network_dim = 4
network_alpha = 32
[optimizer]
optimizer_type = "AdamW8bit"
lr = 1e-4
max_grad_norm = 1.0
[training]
max_train_epochs = 10
save_every_n_epochs = 2
train_batch_size = 4
output_dir = "./output/miyazaki_lora"
"""


def write(tmp_path, text, name="kohya.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_issue_example_maps_every_key(project, tmp_path):
    layer = run_config.load_config_file(write(tmp_path, ISSUE_EXAMPLE))
    assert layer.kind == "kohya"
    assert layer.values == {
        "mixed_precision": "fp16", "attention": "xformers", "gradient_checkpointing": True, "rank": 4,
        "alpha": 32, "optimizer": "adamw8bit", "learning_rate": 1e-4, "max_grad_norm": 1.0,
        "max_train_epochs": 10, "save_every_epochs": 2, "batch_size": 4}
    # output_dir has no effect (runs live in the project) and the user is told so
    assert any("output_dir" in n and "runs" in n for n in layer.notes)
    cfg = run_config.resolve(project, {}, tmp_path / "kohya.toml").config
    assert (cfg.rank, cfg.alpha, cfg.optimizer, cfg.batch_size) == (4, 32.0, "adamw8bit", 4)
    assert (cfg.max_train_epochs, cfg.max_train_steps, cfg.save_every_epochs) == (10, None, 2)


def test_flags_still_override_a_kohya_file(project, tmp_path):
    cfg = run_config.resolve(project, {"rank": 8, "attention": "sdpa"}, write(tmp_path, ISSUE_EXAMPLE)).config
    assert (cfg.rank, cfg.attention, cfg.alpha) == (8, "sdpa", 32.0)


def test_unknown_keys_are_all_listed(tmp_path):
    text = ISSUE_EXAMPLE + "\nnetwork_dimm = 8\nfoo_bar = 1\n"
    with pytest.raises(ConfigError) as e:
        run_config.load_config_file(write(tmp_path, text))
    message = str(e.value)
    assert "unknown key(s): foo_bar, network_dimm" in message and "kohya" in message


def test_features_loradeck_lacks_are_refused_unless_off(tmp_path):
    off = ISSUE_EXAMPLE + "\n[extra]\nflip_aug = false\nclip_skip = 1\nv2 = false\nnetwork_args = []\n"
    run_config.load_config_file(write(tmp_path, off))
    on = ISSUE_EXAMPLE + "\n[extra]\nflip_aug = true\nclip_skip = 2\nfull_fp16 = true\n"
    with pytest.raises(ConfigError) as e:
        run_config.load_config_file(write(tmp_path, on))
    assert all(k in str(e.value) for k in ("flip_aug = True", "clip_skip = 2", "full_fp16 = True"))


@pytest.mark.parametrize("line, problem", [
    ('network_module = "lycoris.kohya"', "only networks.lora"),
    ('optimizer_type = "Prodigy"', "optimizer_type"),
    ('resolution = "512,768"', "square"),
    ('lr_scheduler = "adafactor"', "lr_scheduler"),
])
def test_values_without_an_equivalent_are_refused(tmp_path, line, problem):
    with pytest.raises(ConfigError, match=problem):
        kohya_config.map_kohya({"network": {"network_dim": 4}, "x": dict([_kv(line)])})


def _kv(line):
    import tomllib

    return next(iter(tomllib.loads(line).items()))


def test_more_mappings(tmp_path):
    prompts = write(tmp_path, "# prompts\na sks toy --n blurry --w 512\n\nsks toy on a beach\n", "prompts.txt")
    doc = {
        "model": {"pretrained_model_name_or_path": "synthetic:tiny", "v_parameterization": True},
        "dataset": {"resolution": "512,512", "shuffle_caption": True, "keep_tokens": 1,
                    "caption_dropout_rate": 0.05, "cache_latents_to_disk": True, "train_data_dir": "/data"},
        "training": {"max_train_steps": 100, "noise_offset": 0.05, "min_snr_gamma": 5.0, "seed": 3,
                     "lr_scheduler": "cosine", "lr_warmup_steps": 10, "network_train_unet_only": True,
                     "save_precision": "float", "output_name": "miyazaki", "gradient_accumulation_steps": 2,
                     "sample_prompts": str(prompts), "sample_every_n_steps": 50,
                     "optimizer_args": ["weight_decay=0.05"], "unet_lr": 2e-4, "learning_rate": 1e-4},
    }
    values, notes = kohya_config.map_kohya(doc, base_dir=tmp_path)
    assert values == {
        "base_model": "synthetic:tiny", "prediction_type": "v_prediction", "resolution": 512,
        "shuffle_caption": True, "keep_tokens": 1, "caption_dropout_rate": 0.05, "cache_latents_to_disk": True,
        "cache_latents": True, "max_train_steps": 100, "noise_offset": 0.05, "min_snr_gamma": 5.0, "seed": 3,
        "lr_scheduler": "cosine", "lr_warmup_steps": 10, "train_text_encoder": False, "save_precision": "fp32",
        "output_name": "miyazaki", "gradient_accumulation_steps": 2, "sample_every_steps": 50,
        "sample_prompts": ["a sks toy", "sks toy on a beach"], "weight_decay": 0.05, "learning_rate": 2e-4}
    assert any("train_data_dir" in n for n in notes)


def test_kohya_epochs_win_over_steps_like_kohya(tmp_path):
    values, _ = kohya_config.map_kohya({"training": {"max_train_steps": 1600, "max_train_epochs": 4}})
    assert values == {"max_train_epochs": 4}


def test_detection_by_tables_and_keys():
    assert kohya_config.looks_like_kohya({"general": {"xformers": True}})
    assert kohya_config.looks_like_kohya({"network_dim": 4, "seed": 1})          # flat kohya file
    assert not kohya_config.looks_like_kohya({"rank": 4, "seed": 1})             # loradeck keys
    assert not kohya_config.looks_like_kohya({"train": {"rank": 4}})             # a project.toml-like table
    assert not kohya_config.looks_like_kohya({"rank": 4, "dataset": {"project_dir": "/p", "trigger_word": ""}})
