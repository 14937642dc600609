"""`loradeck convert`: diffusers/peft-layout files become kohya files with the same effect, and back."""

from __future__ import annotations

import json

import pytest
import torch

from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.lora.convert import convert_file, detect_layout, diffusers_to_kohya
from loradeck.trainer.lora.file_format import kohya_key, module_path_from_kohya, read_lora
from loradeck.trainer.lora.validate import check_rules
from tests.conftest import run_cli
from tests.publish.tiny_models import (
    KOHYA_TARGETS,
    TE_TARGETS,
    add_random_lora,
    te_output,
    tiny_pipeline,
    tiny_text_encoder,
    tiny_unet,
    unet_output,
)


@pytest.fixture(scope="module")
def diffusers_file(tmp_path_factory):
    """A LoRA saved the way diffusers' training example saves it, and the outputs it should produce."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict

    out = tmp_path_factory.mktemp("diffusers")
    unet = add_random_lora(tiny_unet(), KOHYA_TARGETS, rank=4, alpha=8.0)
    te = add_random_lora(tiny_text_encoder(514), TE_TARGETS, rank=4, alpha=8.0, seed=2)
    StableDiffusionPipeline.save_lora_weights(
        out, unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(te)),
        weight_name="pytorch_lora_weights.safetensors",
        unet_lora_adapter_metadata={"r": 4, "lora_alpha": 8.0},
        text_encoder_lora_adapter_metadata={"r": 4, "lora_alpha": 8.0})
    return out / "pytorch_lora_weights.safetensors", unet_output(unet), te_output(te)


def _outputs_after_loading(tmp_path, path):
    pipe = tiny_pipeline(tmp_path / "pipe")
    pipe.load_lora_weights(str(path))
    return unet_output(pipe.unet), te_output(pipe.text_encoder)


def test_diffusers_file_converts_to_kohya_with_the_same_effect(tmp_path, diffusers_file):
    src, ref_unet, ref_te = diffusers_file
    assert detect_layout(src) == "diffusers"
    out = tmp_path / "kohya.safetensors"
    info = convert_file(src, out)
    assert info["from"] == "diffusers" and info["to"] == "kohya"
    assert detect_layout(out) == "kohya"
    report = check_rules(out)
    assert report.ok, report.summary()
    # scale lora_alpha / r = 2 from the adapter metadata is carried as alpha 8 at rank 4
    assert set(report.alphas) == {8.0}
    unet_out, te_out = _outputs_after_loading(tmp_path, out)
    assert torch.allclose(unet_out, ref_unet, atol=1e-5)
    assert torch.allclose(te_out, ref_te, atol=1e-5)


def test_kohya_converts_to_diffusers_and_back_with_the_same_effect(tmp_path, diffusers_file):
    src, ref_unet, ref_te = diffusers_file
    convert_file(src, tmp_path / "k.safetensors")
    convert_file(tmp_path / "k.safetensors", tmp_path / "d.safetensors", to="diffusers")
    assert detect_layout(tmp_path / "d.safetensors") == "diffusers"
    unet_out, te_out = _outputs_after_loading(tmp_path, tmp_path / "d.safetensors")
    assert torch.allclose(unet_out, ref_unet, atol=1e-5) and torch.allclose(te_out, ref_te, atol=1e-5)
    convert_file(tmp_path / "d.safetensors", tmp_path / "k2.safetensors")
    unet_out, _ = _outputs_after_loading(tmp_path, tmp_path / "k2.safetensors")
    assert torch.allclose(unet_out, ref_unet, atol=1e-5)


def test_without_alpha_anywhere_diffusers_scale_one_is_kept():
    a, b = torch.randn(2, 8), torch.randn(6, 2)
    out = diffusers_to_kohya({"unet.mid_block.attentions.0.proj_in.lora.down.weight": a,
                              "unet.mid_block.attentions.0.proj_in.lora.up.weight": b})
    assert out["lora_unet_mid_block_attentions_0_proj_in.alpha"].item() == 2.0  # alpha == rank: scale 1


def test_old_attention_processor_keys_are_understood():
    a, b = torch.randn(2, 8), torch.randn(8, 2)
    key = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora"
    out = diffusers_to_kohya({key + ".down.weight": a, key + ".up.weight": b})
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0.lora_down.weight" in out


def test_every_sd15_module_name_survives_the_kohya_round_trip():
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)  # the SD 1.5 architecture
        te = CLIPTextModel(CLIPTextConfig())
    names = [("lora_unet", n) for n, m in unet.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    names += [("lora_te", "text_model." + n) for n, m in te.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(names) > 300
    for prefix, name in names:
        assert module_path_from_kohya(kohya_key(prefix, name)) == (prefix, name)


def test_convert_refuses_to_overwrite_and_to_reconvert(tmp_path, diffusers_file):
    src, _, _ = diffusers_file
    out = tmp_path / "k.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(LoradeckError, match="already exists"):
        convert_file(src, out)
    assert out.read_bytes() == b"keep me"
    convert_file(src, out, overwrite=True)
    with pytest.raises(LoradeckError, match="already in the kohya layout"):
        convert_file(out, tmp_path / "x.safetensors", to="kohya")


def test_cli_convert_then_validate(tmp_path, diffusers_file):
    src, _, _ = diffusers_file
    out = tmp_path / "converted.safetensors"
    proc = run_cli("convert", str(src), str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["to"] == "kohya" and data["modules"] > 0
    tensors, meta = read_lora(out)
    assert meta["loradeck_converted_from"] == "diffusers" and "sshs_model_hash" in meta
    assert run_cli("validate", str(out), "--no-load-check").returncode == 0
    proc = run_cli("convert", str(src), str(out))
    assert proc.returncode == 1 and proc.stderr.startswith("error:") and "--overwrite" in proc.stderr
