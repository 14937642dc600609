"""The kohya-format LoRA file: keys, metadata, hashes, and that diffusers loads it as trained."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import save

from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.lora.file_format import (
    file_model_hash,
    kohya_key,
    kohya_metadata,
    peft_to_kohya,
    read_header,
    read_lora,
    save_kohya_lora,
)
from tests.publish.tiny_models import (
    ATTENTION_TARGETS,
    KOHYA_TARGETS,
    make_lora_tensors,
    te_output,
    tiny_pipeline,
    unet_output,
)


def test_kohya_key_replaces_dots_with_underscores():
    assert kohya_key("lora_unet", "down_blocks.0.attentions.0.proj_in") == "lora_unet_down_blocks_0_attentions_0_proj_in"
    assert kohya_key("lora_te", "text_model.encoder.layers.3.mlp.fc1") == "lora_te_text_model_encoder_layers_3_mlp_fc1"
    with pytest.raises(ValueError):
        kohya_key("lora_unet2", "x")


def _ab(rank=2, fan_in=8, fan_out=6, conv=False):
    a = torch.randn(rank, fan_in, 1, 1) if conv else torch.randn(rank, fan_in)
    b = torch.randn(fan_out, rank, 1, 1) if conv else torch.randn(fan_out, rank)
    return a, b


def test_peft_to_kohya_accepts_prefixed_and_named_adapter_keys():
    a, b = _ab()
    ca, cb = _ab(conv=True)
    unet = {
        "base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.default.weight": a,
        "base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.default.weight": b,
        "unet.mid_block.attentions.0.proj_in.lora_A.weight": ca,
        "unet.mid_block.attentions.0.proj_in.lora_B.weight": cb,
    }
    te = {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": a,
          "encoder.layers.1.mlp.fc1.lora_A.weight": a, "encoder.layers.1.mlp.fc1.lora_B.weight": b,
          "text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight": b}
    out = peft_to_kohya(unet, te, alpha=1.0)
    q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    assert torch.equal(out[q + ".lora_down.weight"], a) and torch.equal(out[q + ".lora_up.weight"], b)
    assert out[q + ".alpha"].dim() == 0 and out[q + ".alpha"].item() == 1.0
    assert out["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"].shape == (2, 8, 1, 1)
    assert out["lora_unet_mid_block_attentions_0_proj_in.lora_up.weight"].shape == (6, 2, 1, 1)
    # transformers 5 CLIP modules have no text_model level; the file keeps kohya's names either way
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha" in out
    assert "lora_te_text_model_encoder_layers_1_mlp_fc1.lora_up.weight" in out
    assert len(out) == 12


@pytest.mark.parametrize("state, message", [
    ({"a.to_q.lora_A.weight": torch.zeros(2, 4)}, "lora_B weight is missing"),
    ({"a.to_q.lora_A.weight": torch.zeros(2, 4), "a.to_q.lora_B.weight": torch.zeros(4, 3)}, "does not match"),
    ({"a.to_q.lora_magnitude_vector": torch.zeros(4)}, "DoRA"),
    ({"a.to_q.weight": torch.zeros(4, 4)}, "not a peft LoRA weight"),
    ({}, "no LoRA weights"),
])
def test_peft_to_kohya_refuses_what_kohya_cannot_hold(state, message):
    with pytest.raises(LoradeckError, match=message):
        peft_to_kohya(state, None, alpha=4)


def _metadata(**extra):
    cfg = TrainConfig(rank=8, alpha=4.0, learning_rate=2e-4, lr_scheduler="cosine", noise_offset=0.05,
                      seed=7, max_train_steps=300).to_dict()
    return kohya_metadata(config=cfg, base_model="runwayml/stable-diffusion-v1-5", base_model_version="sd_v1",
                          resolution=512, tag_frequency={"10_mychar": {"mychar": 20, "red hat": 4}},
                          num_train_images=20, steps=300, epochs=15, output_name="mychar", extra=extra)


def test_kohya_metadata_has_kohya_keys_as_strings():
    meta = _metadata(trigger="mychar")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    expect = {"ss_network_module": "networks.lora", "ss_network_dim": "8", "ss_network_alpha": "4.0",
              "ss_base_model_version": "sd_v1", "ss_output_name": "mychar", "ss_resolution": "(512, 512)",
              "ss_learning_rate": "0.0002", "ss_lr_scheduler": "cosine", "ss_mixed_precision": "fp16",
              "ss_num_train_images": "20", "ss_max_train_steps": "300", "ss_num_epochs": "15", "ss_seed": "7",
              "ss_noise_offset": "0.05", "ss_sd_model_name": "runwayml/stable-diffusion-v1-5",
              "loradeck_trigger": "mychar", "modelspec.trigger_phrase": "mychar"}
    for key, value in expect.items():
        assert meta[key] == value, key
    for key in ("ss_optimizer", "ss_min_snr_gamma", "ss_training_started_at", "ss_network_args", "ss_steps"):
        assert key in meta
    assert json.loads(meta["ss_tag_frequency"]) == {"10_mychar": {"mychar": 20, "red hat": 4}}
    assert json.loads(meta["loradeck_config"])["rank"] == 8
    started = _metadata(training_started_at=1700000000.5)
    assert started["ss_training_started_at"] == "1700000000.5" and "loradeck_training_started_at" not in started


def _kohya_rule_hashes(tensors, metadata, precision_dtype):
    """The hashes as kohya's sd-scripts precomputes them (independent restatement, for the test)."""
    cast = {k: v.to(precision_dtype).contiguous() for k, v in tensors.items()}
    data = save(cast, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    (n,) = struct.unpack("<Q", data[:8])
    return hashlib.sha256(data[8 + n:]).hexdigest(), hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


@pytest.fixture(scope="module")
def trained():
    """kohya tensors from a peft-adapted tiny UNet + text encoder (attention, ff, 1x1-conv targets)."""
    tensors, unet, te = make_lora_tensors(targets=KOHYA_TARGETS, rank=4, alpha=2.0, text_encoder=True)
    return tensors, unet_output(unet), te_output(te)


def test_save_writes_hashes_that_match_the_file(tmp_path, trained):
    tensors, _, _ = trained
    meta = _metadata()
    path = tmp_path / "a.safetensors"
    model_hash = save_kohya_lora(path, tensors, meta)
    _, header_meta = read_header(path)
    assert header_meta["sshs_model_hash"] == model_hash == file_model_hash(path)
    expect_model, expect_legacy = _kohya_rule_hashes(tensors, meta, torch.float16)
    assert model_hash == expect_model
    assert header_meta["sshs_legacy_hash"] == expect_legacy
    assert not [p for p in tmp_path.iterdir() if p.name != "a.safetensors"], "temporary file left behind"


@pytest.mark.parametrize("precision, dtype", [("fp16", torch.float16), ("bf16", torch.bfloat16),
                                              ("fp32", torch.float32)])
def test_save_casts_to_the_chosen_precision(tmp_path, trained, precision, dtype):
    tensors, _, _ = trained
    save_kohya_lora(tmp_path / "a.safetensors", tensors, {"ss_output_name": "a"}, precision=precision)
    loaded, meta = read_lora(tmp_path / "a.safetensors")
    assert {t.dtype for t in loaded.values()} == {dtype}
    assert set(loaded) == set(tensors) and meta["ss_output_name"] == "a"
    for key, value in tensors.items():
        assert loaded[key].shape == value.shape
        assert torch.allclose(loaded[key].float(), value.float(), rtol=1e-2, atol=1e-3)


def test_save_refuses_non_string_metadata(tmp_path, trained):
    with pytest.raises(LoradeckError, match="strings"):
        save_kohya_lora(tmp_path / "a.safetensors", trained[0], {"ss_network_dim": 4})
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("targets", [ATTENTION_TARGETS, KOHYA_TARGETS], ids=["attention", "kohya"])
def test_diffusers_loads_the_file_and_reproduces_the_trained_adapter(tmp_path, targets):
    tensors, unet, _ = make_lora_tensors(targets=targets, rank=4, alpha=2.0)
    path = tmp_path / "lora.safetensors"
    save_kohya_lora(path, tensors, _metadata(), precision="fp32")
    pipe = tiny_pipeline(tmp_path / "base")
    before = unet_output(pipe.unet)
    pipe.load_lora_weights(str(path))
    after = unet_output(pipe.unet)
    assert (after - before).abs().max() > 1e-3, "the LoRA did not change the UNet"
    # Same output as the peft-adapted model it came from: scale = alpha/rank is honoured.
    assert torch.allclose(after, unet_output(unet), atol=1e-5)


def test_diffusers_loads_fp16_file_with_text_encoder(tmp_path, trained):
    tensors, ref_unet, ref_te = trained
    path = tmp_path / "lora.safetensors"
    save_kohya_lora(path, tensors, _metadata())
    pipe = tiny_pipeline(tmp_path / "base")
    te_before = te_output(pipe.text_encoder)
    pipe.load_lora_weights(str(path))
    assert (te_output(pipe.text_encoder) - te_before).abs().max() > 1e-3
    assert torch.allclose(te_output(pipe.text_encoder), ref_te, atol=1e-3)
    assert torch.allclose(unet_output(pipe.unet), ref_unet, atol=1e-3)


def test_reloaded_file_has_the_trained_weights(tmp_path):
    tensors, unet, _ = make_lora_tensors(targets=KOHYA_TARGETS, rank=4, alpha=2.0)
    save_kohya_lora(tmp_path / "a.safetensors", tensors, {}, precision="fp32")
    loaded, _ = read_lora(tmp_path / "a.safetensors")
    peft_sd = get_peft_model_state_dict(unet)
    a = peft_sd["down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.lora_A.weight"]
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_ff_net_2"
    assert torch.equal(loaded[key + ".lora_down.weight"], a)
    assert loaded[key + ".alpha"].item() == 2.0


@pytest.mark.parametrize("content, message", [
    (b"", "empty or truncated"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all", "not JSON"),
    (b"\xff" * 64, "bad header length"),
], ids=["empty", "garbled-header", "huge-header-length"])
def test_read_lora_explains_a_bad_file(tmp_path, content, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(LoradeckError, match=message):
        read_lora(path)


@pytest.mark.parametrize("entry", [{"dtype": "F16", "shape": "x", "data_offsets": [0, 2]},
                                   {"dtype": "F16", "shape": [1], "data_offsets": [4, 2]},
                                   {"dtype": "F16", "shape": [1]}, [1, 2]])
def test_read_lora_explains_a_malformed_header_entry(tmp_path, entry):
    raw = json.dumps({"a.alpha": entry}).encode()
    raw += b" " * (-len(raw) % 8)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 8)
    with pytest.raises(LoradeckError, match="malformed"):
        read_lora(path)


def test_read_lora_explains_a_truncated_file(tmp_path, trained):
    path = tmp_path / "a.safetensors"
    save_kohya_lora(path, trained[0], {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(LoradeckError, match="truncated"):
        read_lora(path)
    with pytest.raises(LoradeckError, match="no such file"):
        read_lora(tmp_path / "missing.safetensors")
