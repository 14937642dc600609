"""Base model loading: synthetic models, local folders, HF ids offline, and the errors users see."""

from __future__ import annotations

import json
import shutil

import pytest

from loradeck.trainer.errors import ModelError
from loradeck.trainer.train import models, synthetic_sd


def test_synthetic_tiny_is_sd1_shaped_and_seeded():
    a = synthetic_sd.build("tiny")
    b = synthetic_sd.build("tiny")
    assert type(a["unet"]).__name__ == "UNet2DConditionModel"
    assert type(a["vae"]).__name__ == "AutoencoderKL"
    assert type(a["text_encoder"]).__name__ == "CLIPTextModel"
    for key, tensor in a["unet"].state_dict().items():
        assert (tensor == b["unet"].state_dict()[key]).all(), key
    ids = a["tokenizer"](["red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids.shape == (1, 77) and ids.max() < a["text_encoder"].config.vocab_size


def test_synthetic_sd15_has_the_real_architecture_sizes():
    configs = synthetic_sd.component_configs("sd15")
    assert configs["unet"]["cross_attention_dim"] == 768
    assert configs["vae"]["block_out_channels"] == [128, 256, 512, 512]
    assert configs["text_encoder"]["num_hidden_layers"] == 12


def test_unknown_synthetic_kind_is_a_model_error():
    with pytest.raises(ModelError, match="synthetic:huge"):
        models.load_base_model("synthetic:huge")


def test_local_folder_loads_and_prediction_type_auto_reads_the_scheduler(tiny_model, tmp_path):
    m = models.load_base_model(str(tiny_model))
    assert m.source == "folder" and m.prediction_type == "epsilon"
    assert models.resolve_prediction_type("auto", m) == "epsilon"
    assert models.resolve_prediction_type("v_prediction", m) == "v_prediction"

    vpred = tmp_path / "vpred"
    shutil.copytree(tiny_model, vpred)
    cfg_path = vpred / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["prediction_type"] = "v_prediction"
    cfg_path.write_text(json.dumps(cfg))
    assert models.resolve_prediction_type("auto", models.load_base_model(str(vpred))) == "v_prediction"


def test_missing_hub_model_offline_names_it_and_how_to_download(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError) as info:
        models.load_base_model("someone/not-cached-model")
    text = info.value.one_line()
    assert "someone/not-cached-model" in text and "HF_HUB_OFFLINE" in text
    assert "hf download someone/not-cached-model" in text


def test_folder_with_pickled_weights_only_is_refused(tiny_model, tmp_path):
    import torch
    from safetensors.torch import load_file

    bad = tmp_path / "pickled"
    shutil.copytree(tiny_model, bad)
    unet_file = bad / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(unet_file), bad / "unet" / "diffusion_pytorch_model.bin")
    unet_file.unlink()
    with pytest.raises(ModelError, match="could not be loaded"):
        models.load_base_model(str(bad))


def test_missing_paths_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        models.load_base_model(str(tmp_path / "nothing.safetensors"))
    with pytest.raises(ModelError, match="does not exist"):
        models.load_base_model(str(tmp_path / "no" / "folder"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="scheduler_config.json"):
        models.load_base_model(str(tmp_path / "empty"))
