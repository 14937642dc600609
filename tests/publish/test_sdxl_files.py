"""SDXL LoRA files through publish, the shared folder and packs: published like SD1 files, listed as
SDXL, and never mixed with SD1 adapters in one pack."""

from __future__ import annotations

import json

import pytest

from tests.publish.tiny_models import write_lora
from trainer.packs import PackError, create_pack
from trainer.publish import publish_adapter


def write_sdxl_lora(path, *, seed: int = 0) -> None:
    """A kohya SDXL file from a real adapter on synthetic:sdxl-tiny's UNet (random up weights)."""
    import torch

    from trainer import lora_file, lora_network, lora_sdxl, synthetic_sd

    parts = synthetic_sd.build("sdxl-tiny")
    unet = parts["unet"]
    torch.manual_seed(seed)
    lora_network.add_unet_lora(unet, rank=4, alpha=4.0, targets="attention")
    for name, p in unet.named_parameters():
        if "lora_B" in name:
            p.data.normal_()
    tensors = lora_sdxl.peft_to_kohya_sdxl(lora_network.lora_state_dict(unet), None, None, alpha=4.0,
                                           unet_config=dict(unet.config))
    meta = lora_file.kohya_metadata(config={"rank": 4, "alpha": 4.0}, base_model="synthetic:sdxl-tiny",
                                    base_model_version="sdxl_base_v1-0", resolution=1024, tag_frequency={},
                                    num_train_images=1, steps=1, epochs=1, output_name="xl",
                                    extra={"trigger": "xlstyle"})
    lora_file.save_kohya_lora(path, tensors, meta, precision="fp32")


def test_an_sdxl_lora_publishes_lists_as_sdxl_and_is_not_packed_with_sd1(tmp_path, shared):
    from trainer import lora_validate

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
