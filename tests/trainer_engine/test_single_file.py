"""Single-file (original LDM layout) checkpoints load offline and compute what the diffusers model does."""

from __future__ import annotations

import pytest
import torch
from ldm_layout import to_single_file

from loradeck.trainer.errors import ModelError
from loradeck.trainer.train import models, synthetic_sd


def sd1_convention_tiny():
    """A tiny model that follows the SD1.x conventions shapes cannot show (32 groups, 64-wide CLIP heads)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = synthetic_sd.component_configs("tiny")
    cfg["unet"].update(norm_num_groups=32)
    cfg["vae"].update(block_out_channels=[32, 64], norm_num_groups=32)
    cfg["text_encoder"].update(hidden_size=64, num_attention_heads=1, projection_dim=64)
    cfg["unet"].update(cross_attention_dim=64)
    torch.manual_seed(0)
    return (UNet2DConditionModel(**cfg["unet"]).eval(), AutoencoderKL(**cfg["vae"]).eval(),
            CLIPTextModel(CLIPTextConfig(**cfg["text_encoder"])).eval())


def test_single_file_checkpoint_loads_offline_with_the_same_outputs(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    unet, vae, te = sd1_convention_tiny()
    path = tmp_path / "tiny-sd1.safetensors"
    save_file(to_single_file(unet, vae, te), path)

    m = models.load_base_model(str(path))
    assert m.source == "single_file" and m.prediction_type == "epsilon"
    assert list(m.unet.config.block_out_channels) == [32, 64] and m.unet.config.layers_per_block == 1
    x, t, h = torch.randn(1, 4, 16, 16), torch.tensor([10]), torch.randn(1, 77, 64)
    px = torch.rand(1, 3, 32, 32) * 2 - 1
    ids = m.tokenizer(["red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(m.unet(x, t, h).sample, unet(x, t, h).sample, atol=1e-5)
        assert torch.allclose(m.vae.encode(px).latent_dist.mean, vae.encode(px).latent_dist.mean, atol=1e-5)
        assert torch.allclose(m.vae.decode(x).sample, vae.decode(x).sample, atol=1e-5)
        assert torch.allclose(m.text_encoder(ids)[0], te(ids)[0], atol=1e-5)

    (tmp_path / "tiny-sd1.yaml").write_text('model:\n  params:\n    parameterization: "v"\n')
    assert models.load_base_model(str(path)).prediction_type == "v_prediction"


def test_pickled_checkpoints_are_never_unpickled_beyond_tensors(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": print}, path)  # a callable: refused
    with pytest.raises(ModelError, match="refusing to unpickle"):
        models.load_base_model(str(path))


def test_a_lora_file_is_not_mistaken_for_a_base_model(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_down.weight": torch.zeros(4, 8)}, path)
    with pytest.raises(ModelError, match="not a full SD1.x checkpoint"):
        models.load_base_model(str(path))
