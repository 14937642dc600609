"""SDXL LoRA files through publish, the shared folder and packs: published like SD1 files, listed as
SDXL, and never mixed with SD1 adapters in one pack."""

from __future__ import annotations

import json

import pytest

from loradeck.trainer.lora.packs import PackError, create_pack
from loradeck.trainer.lora.publish import publish_adapter
from tests.publish.tiny_models import write_lora


def write_sdxl_lora(path, *, seed: int = 0) -> None:
    """A kohya SDXL file from a real adapter on synthetic:sdxl-tiny's UNet (random up weights)."""
    import torch

    from loradeck.trainer.lora import file_format as lora_file
    from loradeck.trainer.lora import sdxl_names as lora_sdxl
    from loradeck.trainer.train import lora_network, synthetic_sd

    parts = synthetic_sd.build("sdxl-tiny")
    unet = parts["unet"]
    torch.manual_seed(seed)
    lora_network.add_unet_lora(unet, rank=4, alpha=4.0, targets="attention")
    te1, te2 = parts["text_encoder"], parts["text_encoder_2"]
    lora_network.add_text_encoder_lora(te1, rank=4, alpha=4.0, targets="attention", layers=range(2))
    lora_network.add_text_encoder_lora(te2, rank=4, alpha=4.0, targets="attention")
    for module in (unet, te1, te2):
        for name, p in module.named_parameters():
            if "lora_B" in name:
                p.data.normal_(std=0.1)
    tensors = lora_sdxl.peft_to_kohya_sdxl(lora_network.lora_state_dict(unet), lora_network.lora_state_dict(te1),
                                           lora_network.lora_state_dict(te2), alpha=2.0,
                                           unet_config=dict(unet.config))
    meta = lora_file.kohya_metadata(config={"rank": 4, "alpha": 4.0}, base_model="synthetic:sdxl-tiny",
                                    base_model_version="sdxl_base_v1-0", resolution=1024, tag_frequency={},
                                    num_train_images=1, steps=1, epochs=1, output_name="xl",
                                    extra={"trigger": "xlstyle"})
    lora_file.save_kohya_lora(path, tensors, meta, precision="fp32")


def test_an_sdxl_lora_publishes_lists_as_sdxl_and_is_not_packed_with_sd1(tmp_path, shared):
    from loradeck.trainer.lora import validate as lora_validate

    xl, one = tmp_path / "xl.safetensors", tmp_path / "one.safetensors"
    write_sdxl_lora(xl)
    write_lora(one, seed=1, trigger="aaa", precision="fp32")
    report = lora_validate.validate(xl)  # names synthetic:sdxl-tiny: the load check runs on it
    assert report.ok and report.family == "sdxl" and report.load_check.startswith("passed"), report.summary()
    publish_adapter(xl, shared, "xl-style", who="maya")
    publish_adapter(one, shared, "sd1-style", who="maya")
    sidecars = {p.name: json.loads(p.read_text()) for p in shared.glob("*.json")}
    assert any(s.get("sd version") == "SDXL" for s in sidecars.values()), sidecars
    with pytest.raises(PackError, match="cannot mix SD 1.x and SDXL"):
        create_pack(shared, "mixed", [("xl-style", 1.0), ("sd1-style", 1.0)])
    assert not (shared / "mixed.pack.json").exists()


def test_an_sdxl_lora_converts_to_diffusers_and_back_with_the_same_effect(tmp_path):
    import torch
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    from loradeck.trainer.lora import convert as lora_convert
    from loradeck.trainer.train import synthetic_sd

    kohya, peft, back = tmp_path / "xl.safetensors", tmp_path / "xl-peft.safetensors", tmp_path / "back.safetensors"
    write_sdxl_lora(kohya)
    assert lora_convert.convert_file(kohya, peft)["to"] == "diffusers"
    keys = set(load_file(peft))
    assert any(k.startswith("unet.down_blocks.1.attentions.0.") for k in keys)
    assert any(k.startswith("text_encoder_2.") for k in keys) and any(k.startswith("text_encoder.") for k in keys)
    lora_convert.convert_file(peft, back)
    a, b = load_file(kohya), load_file(back)
    assert set(a) == set(b)
    for k in a:  # alpha is folded into lora_B on the way out, so compare the effective update
        if k.endswith(".lora_up.weight"):
            base = k[: -len(".lora_up.weight")]
            wa = a[k] @ a[base + ".lora_down.weight"] * (a[base + ".alpha"] / a[k].shape[1])
            wb = b[k] @ b[base + ".lora_down.weight"] * (b[base + ".alpha"] / b[k].shape[1])
            assert torch.allclose(wa, wb, atol=1e-6), k

    model = tmp_path / "model"
    synthetic_sd.save("sdxl-tiny", model)
    x, t, h = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 77, 64)
    cond = {"text_embeds": torch.randn(1, 32), "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]])}
    ids = torch.tensor([[1, 70, 80, 90, 2]])
    outs = []
    for path in (kohya, peft):
        pipe = StableDiffusionXLPipeline.from_pretrained(model)
        pipe.load_lora_weights(str(path))
        with torch.no_grad():
            outs.append((pipe.unet(x, t, h, added_cond_kwargs=cond).sample, pipe.text_encoder(ids)[0],
                         pipe.text_encoder_2(ids)[0]))
    for one, other in zip(*outs):
        assert torch.allclose(one, other, atol=1e-5)
