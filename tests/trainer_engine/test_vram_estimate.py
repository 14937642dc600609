"""The VRAM estimate (loradeck.trainer.gpu.vram_estimate): its breakdown against the models' real sizes, the knobs
moving the parts they should, and the fit advice. All on meta tensors: no GPU, no weights."""

from __future__ import annotations

import dataclasses

import pytest

from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.gpu import vram_estimate
from loradeck.trainer.gpu.memory_trace import rounded

TINY = dict(base_model="synthetic:tiny", resolution=64, batch_size=2)


@pytest.fixture(scope="module")
def plain():
    return vram_estimate.estimate(TrainConfig(**TINY))


def knobs(**over) -> vram_estimate.Estimate:
    return vram_estimate.estimate(TrainConfig(**{**TINY, **over}))


def real_bytes(modules_and_dtypes) -> int:
    """What the frozen weights take when the real model is built and cast as the trainer casts it."""
    total = 0
    for module, dtype in modules_and_dtypes:
        for t in list(module.parameters()) + list(module.buffers()):
            size = t.numel() * (dtype.itemsize if t.is_floating_point() else t.element_size())
            total += rounded(size)
    return total


def test_frozen_weights_are_the_real_models_bytes_in_the_runs_dtypes(plain):
    import torch

    from loradeck.trainer.train import synthetic_sd

    parts = synthetic_sd.build("tiny")
    vae = parts["vae"]
    vae.decoder = vae.post_quant_conv = None  # no sampling: the trainer drops the decoder
    expected = real_bytes([(parts["unet"], torch.float16), (parts["text_encoder"], torch.float16),
                           (vae, torch.float32)])
    assert plain.breakdown["frozen weights"] == expected


def test_adapter_weights_and_optimizer_state_follow_the_lora_parameter_count(plain):
    import torch

    from loradeck.trainer.train import lora_network, synthetic_sd

    unet = synthetic_sd.build("tiny")["unet"]
    params = lora_network.add_unet_lora(unet, rank=16, alpha=16, targets="attention")
    assert plain.breakdown["adapter weights"] == sum(rounded(p.numel() * 4) for p in params)
    # fused AdamW: exp_avg + exp_avg_sq (fp32 each) and a step scalar per parameter
    assert plain.breakdown["optimizer state"] == sum(2 * rounded(p.numel() * 4) + rounded(4) for p in params)
    assert torch.float32.itemsize == 4


def test_sd15_breakdown_matches_the_published_parameter_counts():
    est = vram_estimate.estimate(TrainConfig(base_model="synthetic:sd15", resolution=128, batch_size=1))
    # SD1.5: UNet 859.5 M and CLIP-L text encoder 123.1 M parameters in fp16, VAE encoder 34.2 M in fp32
    expected = 859_520_964 * 2 + 123_060_480 * 2 + 34_163_664 * 4
    assert abs(est.breakdown["frozen weights"] - expected) / expected < 0.01
    assert est.expected_peak_bytes > est.breakdown["frozen weights"] + est.breakdown["activations"]
    assert est.nvidia_smi_bytes > est.expected_peak_bytes + vram_estimate.CUDA_CONTEXT_BYTES


def test_the_two_totals_add_up_from_the_breakdown(plain):
    assert plain.expected_peak_bytes == sum(plain.breakdown.values())
    assert plain.nvidia_smi_bytes == plain.reserved_bytes + plain.context_bytes
    assert plain.reserved_bytes > plain.expected_peak_bytes
    assert set(plain.sources) >= set(plain.breakdown)


def test_gradient_checkpointing_trades_activations_for_recomputation(plain):
    assert knobs(gradient_checkpointing=True).breakdown["activations"] < plain.breakdown["activations"] / 2


def test_caching_latents_takes_the_vae_off_the_gpu_during_training(plain):
    cached = knobs(cache_latents=True)
    assert cached.breakdown["frozen weights"] < plain.breakdown["frozen weights"]
    assert cached.caching_peak_bytes is not None and plain.caching_peak_bytes is None
    text = knobs(cache_text_embeddings=True)
    assert text.breakdown["frozen weights"] < plain.breakdown["frozen weights"]


def test_eager_attention_keeps_the_attention_matrix_and_sdpa_does_not(plain):
    assert knobs(attention="eager").expected_peak_bytes > 3 * plain.expected_peak_bytes
    assert knobs(attention="xformers").expected_peak_bytes == plain.expected_peak_bytes


def test_8bit_adam_keeps_a_quarter_of_adamws_state_for_tensors_bitsandbytes_quantises():
    import torch

    big = torch.empty(16, 320, device="meta")  # SD1.5's smallest to_q lora_A: 5120 elements
    small = torch.empty(16, 32, device="meta")  # under bitsandbytes' 4096-element minimum: 32-bit state

    def state_bytes(optimizer, p):
        return sum(rounded(t.numel() * t.element_size()) for t in vram_estimate.optimizer_state(optimizer, [p]))
    # 2 x uint8 + 2 fp32 absmax per 256 elements; each tensor its own 512-byte allocator block
    assert 0.25 < state_bytes("adamw8bit", big) / state_bytes("adamw", big) < 0.28
    assert state_bytes("adamw8bit", small) == state_bytes("adamw", small)
    assert knobs(optimizer="adamw8bit").breakdown["optimizer state"] <= knobs().breakdown["optimizer state"]


def test_fp32_doubles_the_frozen_unet_and_batch_grows_activations(plain):
    assert knobs(mixed_precision="no").breakdown["frozen weights"] > 1.5 * plain.breakdown["frozen weights"]
    assert knobs(batch_size=4).breakdown["activations"] > 1.5 * plain.breakdown["activations"]


def test_fit_advice_names_the_cheapest_knob_that_fits(plain):
    cfg = TrainConfig(**TINY)
    assert vram_estimate.fit_advice(cfg, plain.nvidia_smi_bytes, current=plain) is None
    cached = knobs(cache_latents=True)
    advice = vram_estimate.fit_advice(cfg, cached.nvidia_smi_bytes, current=plain)
    assert advice.changes == ["--cache-latents"] and advice.config.cache_latents
    nothing = vram_estimate.fit_advice(cfg, 1024, current=plain)
    assert nothing.changes == []


def test_smaller_batch_keeps_the_effective_batch_with_accumulation():
    cfg = TrainConfig(**dict(TINY, batch_size=4), cache_latents=True, cache_text_embeddings=True,
                      gradient_checkpointing=True, optimizer="adamw8bit")
    steps = list(vram_estimate.knob_steps(cfg))
    assert [flag for flag, _ in steps][:2] == ["--batch-size 2 --grad-accum 2", "--batch-size 1 --grad-accum 4"]
    assert all(c.batch_size * c.gradient_accumulation_steps == 4 for _, c in steps)


def test_estimate_round_trips_through_json(plain):
    import json

    again = vram_estimate.Estimate.from_dict(json.loads(json.dumps(plain.to_dict())))
    assert dataclasses.asdict(again) == plain.to_dict()


def test_a_diffusers_folder_and_a_single_file_are_estimated_from_their_configs_alone(tmp_path, plain):
    import torch
    from ldm_layout import to_single_file
    from safetensors.torch import save_file
    from test_single_file import sd1_convention_tiny

    from loradeck.trainer.gpu import model_skeleton
    from loradeck.trainer.train import synthetic_sd

    folder = synthetic_sd.save("tiny", tmp_path / "tiny")
    assert knobs(base_model=str(folder)).expected_peak_bytes == plain.expected_peak_bytes
    unet, vae, te = sd1_convention_tiny()
    path = tmp_path / "tiny-sd1.safetensors"
    save_file(to_single_file(unet, vae, te), path)
    skeleton = model_skeleton.build(str(path))  # shapes from the header: the weights stay on disk
    assert next(skeleton.unet.parameters()).device.type == "meta"
    assert sum(p.numel() for p in skeleton.unet.parameters()) == sum(p.numel() for p in unet.parameters())
    assert sum(p.numel() for p in skeleton.text_encoder.parameters()) == sum(p.numel() for p in te.parameters())
    expected = real_bytes([(unet, torch.float16), (te, torch.float16), (_encoder_only(vae), torch.float32)])
    assert knobs(base_model=str(path)).breakdown["frozen weights"] == expected


def _encoder_only(vae):
    vae.decoder = vae.post_quant_conv = None
    return vae


# ------------------------------------------------------------------------------------------- SDXL

SDXL_TINY = dict(base_model="synthetic:sdxl-tiny", resolution=64, batch_size=2)


@pytest.fixture(scope="module")
def sdxl_plain():
    return vram_estimate.estimate(TrainConfig(**SDXL_TINY))


def test_sdxl_estimate_counts_both_text_encoders_in_the_runs_dtypes(sdxl_plain):
    import torch

    from loradeck.trainer.train import synthetic_sd

    parts = synthetic_sd.build("sdxl-tiny")
    expected = real_bytes([(parts["unet"], torch.float16), (parts["text_encoder"], torch.float16),
                           (parts["text_encoder_2"], torch.float16), (_encoder_only(parts["vae"]), torch.float32)])
    assert sdxl_plain.breakdown["frozen weights"] == expected
    assert sdxl_plain.expected_peak_bytes == sum(sdxl_plain.breakdown.values())
    assert sdxl_plain.breakdown["activations"] > 0 and sdxl_plain.breakdown["inputs"] > 0
    cached = vram_estimate.estimate(TrainConfig(**SDXL_TINY, cache_text_embeddings=True))
    without = real_bytes([(parts["text_encoder"], torch.float16), (parts["text_encoder_2"], torch.float16)])
    assert sdxl_plain.breakdown["frozen weights"] - cached.breakdown["frozen weights"] == without


def test_sdxl_skeleton_is_the_real_architecture_from_every_source(tmp_path):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from ldm_layout import to_sdxl_single_file
    from safetensors.torch import save_file

    from loradeck.trainer.gpu import model_skeleton
    from loradeck.trainer.train import synthetic_sd

    def counts(model):
        return [sum(p.numel() for p in m.parameters())
                for m in (model.unet, model.vae, model.text_encoder, model.text_encoder_2)]

    parts = synthetic_sd.build("sdxl-tiny")
    want = [sum(p.numel() for p in parts[k].parameters()) for k in ("unet", "vae", "text_encoder", "text_encoder_2")]
    synthetic = model_skeleton.build("synthetic:sdxl-tiny")
    assert synthetic.family == "sdxl" and type(synthetic.text_encoder_2).__name__ == "CLIPTextModelWithProjection"
    assert next(synthetic.text_encoder_2.parameters()).device.type == "meta"
    assert counts(synthetic) == want
    folder = model_skeleton.build(str(synthetic_sd.save("sdxl-tiny", tmp_path / "xl")))
    assert folder.family == "sdxl" and counts(folder) == want
    # A single SGM-layout file (SDXL's 32 norm groups: a checkpoint's tensors do not say how many).
    configs = synthetic_sd.component_configs("sdxl-tiny")
    torch.manual_seed(1)
    parts["unet"] = UNet2DConditionModel(**dict(configs["unet"], norm_num_groups=32))
    parts["vae"] = AutoencoderKL(**dict(configs["vae"], norm_num_groups=32, block_out_channels=[32, 64]))
    path = tmp_path / "xl.safetensors"
    save_file(to_sdxl_single_file(parts["unet"], parts["vae"], parts["text_encoder"], parts["text_encoder_2"]), path)
    single = model_skeleton.build(str(path))
    assert single.family == "sdxl" and single.unet.config.addition_embed_type == "text_time"
    assert counts(single) == [sum(p.numel() for p in parts[k].parameters())
                              for k in ("unet", "vae", "text_encoder", "text_encoder_2")]
    assert single.text_encoder_2.config.projection_dim == parts["text_encoder_2"].config.projection_dim
    est = knobs(base_model=str(path))
    assert est.breakdown["frozen weights"] == real_bytes(
        [(parts["unet"], torch.float16), (parts["text_encoder"], torch.float16),
         (parts["text_encoder_2"], torch.float16), (_encoder_only(parts["vae"]), torch.float32)])


@pytest.mark.parametrize("over", [{}, {"cache_text_embeddings": True}, {"train_text_encoder": True}],
                         ids=["encoders", "cached text", "text encoders trained"])
def test_sdxl_meta_trace_equals_one_real_cpu_step(over):
    """The estimate's trace on meta against the same tracker on one real CPU step with real weights
    (bench/bench_estimate.py --accuracy): the SDXL conditioning is the loop's, tensor for tensor."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    import bench_estimate

    cfg = TrainConfig(**SDXL_TINY, **bench_estimate.cpu_knobs(over))
    meta, real, _, _ = bench_estimate.compare(cfg)
    assert abs(meta["peak"] - real["peak"]) <= 0.001 * real["peak"], (meta, real)
    assert meta["peak_phase"] == real["peak_phase"]
    assert meta["split"]["adapter weights"] == real["split"]["adapter weights"]


def test_full_sdxl_at_1024_px_estimates_in_the_range_sd_scripts_reports():
    """synthetic:sdxl (the SDXL base 1.0 architecture) on meta with the SDXL preset's knobs: sd-scripts'
    docs put SDXL LoRA at 1024 px (fp16, checkpointing, cached latents) near 8-10 GB."""
    from loradeck.trainer.config import presets

    cfg = TrainConfig(base_model="synthetic:sdxl", **presets.get(presets.SDXL_PRESET).overrides)
    est = vram_estimate.estimate(cfg)
    # UNet 2.567 B parameters in fp16 are the frozen weights (latents and text embeddings are cached)
    assert abs(est.breakdown["frozen weights"] - 2_567_463_684 * 2) / (2_567_463_684 * 2) < 0.01
    assert 6 * vram_estimate.GiB < est.nvidia_smi_bytes < 14 * vram_estimate.GiB
    assert est.seconds < 120


@pytest.mark.parametrize("model,first_rows", [("synthetic:tiny", 6), ("synthetic:sdxl-tiny", 2)])
def test_replayed_meta_results_change_no_byte_of_the_estimate(model, first_rows, monkeypatch):
    """memory_trace.MetaResults replays a meta kernel's result shapes instead of running it again: across
    the knob matrix the estimate is the same, byte for byte and part for part, with it and without it."""
    from loradeck.trainer.gpu import memory_trace

    rows = [{}, {"gradient_checkpointing": True}, {"cache_latents": True, "cache_text_embeddings": True},
            {"mixed_precision": "no", "attention": "eager"}, {"train_text_encoder": True},
            {"optimizer": "adamw8bit", "gradient_accumulation_steps": 2, "gradient_checkpointing": True}]
    replaying = memory_trace.MetaResults()
    for over in rows[:first_rows]:
        cfg = TrainConfig(**{**TINY, "base_model": model, **over})
        monkeypatch.setattr(memory_trace, "META_RESULTS", None)
        kernels = vram_estimate.estimate(cfg)
        monkeypatch.setattr(memory_trace, "META_RESULTS", replaying)
        replayed = vram_estimate.estimate(cfg)
        for field in ("expected_peak_bytes", "nvidia_smi_bytes", "breakdown", "caching_peak_bytes", "peak_phase"):
            assert getattr(replayed, field) == getattr(kernels, field), (over, field)
    assert replaying.hits > 10 * replaying.misses  # the repeats were replayed, not recomputed


def test_an_op_that_returns_its_input_storage_is_never_replayed():
    """_unsafe_view's schema declares no alias, yet its result shares its input's storage: replaying
    it as a fresh tensor would count those bytes twice."""
    import torch

    from loradeck.trainer.gpu import memory_trace

    results = memory_trace.MetaResults()
    with memory_trace.StorageTracker("meta") as tracker:
        tracker.results = results
        base = torch.empty(4, 6, device="meta")
        for _ in range(3):
            view = torch.ops.aten._unsafe_view(base, [6, 4])
            assert view.untyped_storage()._cdata == base.untyped_storage()._cdata
        assert tracker.current == memory_trace.rounded(4 * 6 * 4)
    assert results.fresh[torch.ops.aten._unsafe_view.default] is False
