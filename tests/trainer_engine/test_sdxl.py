"""SDXL end to end on synthetic:sdxl-tiny: family detection and refusal, training with both text
encoders and micro-conditioning, stop/resume, and the kohya SDXL file loading in diffusers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_helpers import events_of, train_in_process, write_images, write_run


@pytest.fixture(scope="module")
def sdxl_tiny(tmp_path_factory) -> Path:
    from loradeck.trainer.train import synthetic_sd

    out = tmp_path_factory.mktemp("models") / "sdxl-tiny"
    synthetic_sd.save("sdxl-tiny", out)
    return out


@pytest.fixture
def sdxl_run(tmp_path, sdxl_tiny):
    project = tmp_path / "proj"
    write_images(project / "dataset", 4)

    def make(name="run", **overrides):
        overrides.setdefault("base_model", str(sdxl_tiny))
        return write_run(tmp_path / "runs" / name, project, **overrides)
    return make


def test_family_is_read_from_folders_synthetic_names_and_single_file_headers(tmp_path, sdxl_tiny, tiny_model):
    import torch
    from safetensors.torch import save_file

    from loradeck.trainer.config import model_family

    assert model_family.detect(str(sdxl_tiny)) == "sdxl"
    assert model_family.detect(str(tiny_model)) == "sd1"
    assert model_family.detect("synthetic:sdxl-tiny") == "sdxl" and model_family.detect("synthetic:tiny") == "sd1"
    one = torch.zeros(1)
    save_file({"conditioner.embedders.1.model.ln_final.weight": one, "model.diffusion_model.out.2.weight": one.clone()},
              tmp_path / "xl.safetensors")
    assert model_family.detect(str(tmp_path / "xl.safetensors")) == "sdxl"
    for keys, says in ((["model.diffusion_model.joint_blocks.0.x"], "SD3"), (["double_blocks.0.img_attn"], "Flux"),
                       (["cond_stage_model.model.ln_final.weight", "model.diffusion_model.out.2.weight"], "SD 2")):
        path = tmp_path / f"{says}.safetensors"
        save_file({k: one.clone() for k in keys}, path)
        with pytest.raises(Exception, match=says):
            model_family.detect(str(path))


def test_an_unsupported_architecture_is_refused_before_a_run_folder_exists(tmp_path, tiny_model):
    import shutil

    from loradeck.trainer.dataset import project as project_mod
    from loradeck.trainer.errors import ModelError
    from loradeck.trainer.runs import lifecycle as runs

    sd2 = tmp_path / "sd2"
    shutil.copytree(tiny_model, sd2)
    config = json.loads((sd2 / "unet" / "config.json").read_text())
    (sd2 / "unet" / "config.json").write_text(json.dumps(dict(config, cross_attention_dim=1024)))
    proj = project_mod.create_project("p", root=tmp_path)
    before = set((proj.path / "runs").glob("*")) if (proj.path / "runs").exists() else set()
    with pytest.raises(ModelError, match="SD 2.x.*not supported"):
        runs.create_run(proj, {"base_model": str(sd2)})
    after = set((proj.path / "runs").glob("*")) if (proj.path / "runs").exists() else set()
    assert after == before


def test_sdxl_run_trains_both_text_encoders_and_exports_kohya_sdxl_that_diffusers_loads(sdxl_run, sdxl_tiny):
    import torch
    from diffusers import StableDiffusionXLPipeline
    from safetensors import safe_open

    from loradeck.trainer.lora import validate as lora_validate  # noqa: F401  (validate understands SDXL: checked below)

    run = sdxl_run(max_train_steps=2, train_text_encoder=True, text_encoder_lr=5e-4, save_precision="fp32",
                   cache_latents=True)
    assert train_in_process(run) == 0, events_of(run, "error")
    started = events_of(run, "run_started")[0]
    assert started["model_family"] == "sdxl"
    assert events_of(run, "step")[-1]["lr_te"] == pytest.approx(5e-4)
    out = run / "out.safetensors"
    with safe_open(out, "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        tensors = {k: f.get_tensor(k) for k in keys}
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["sshs_model_hash"] and meta["sshs_legacy_hash"]
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight" in keys
    assert "lora_unet_input_blocks_5_1_transformer_blocks_1_attn2_to_k.alpha" in keys
    assert any(k.startswith("lora_unet_middle_block_1_") for k in keys)
    assert any(k.startswith("lora_unet_output_blocks_1_1_") for k in keys)
    assert any(k.startswith("lora_te1_text_model_encoder_layers_0_self_attn_q_proj") for k in keys)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_0_self_attn_q_proj") for k in keys)
    assert not any("down_blocks" in k or "up_blocks" in k or "mid_block" in k for k in keys)
    assert all(tensors[k].dim() == 0 for k in keys if k.endswith(".alpha"))

    report = lora_validate.validate(out, base_model=str(sdxl_tiny))
    assert report.ok and report.family == "sdxl" and report.load_check.startswith("passed"), report.summary()
    assert "SDXL" in report.summary()
    _diffusers_named_unet_key_in_an_sdxl_file_is_refused(out, run / "bad.safetensors")

    pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_tiny)
    x, t, h = torch.randn(1, 4, 16, 16), torch.tensor([500]), torch.randn(1, 77, 64)
    cond = {"text_embeds": torch.randn(1, 32), "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]])}
    with torch.no_grad():
        before = pipe.unet(x, t, h, added_cond_kwargs=cond).sample
        pipe.load_lora_weights(str(run), weight_name="out.safetensors")
        after = pipe.unet(x, t, h, added_cond_kwargs=cond).sample
    # Every module of the file became an adapter layer (nothing dropped, nothing unexpected).
    from peft.tuners.lora import LoraLayer

    loaded = {"unet": sum(isinstance(m, LoraLayer) for m in pipe.unet.modules()),
              "te1": sum(isinstance(m, LoraLayer) for m in pipe.text_encoder.modules()),
              "te2": sum(isinstance(m, LoraLayer) for m in pipe.text_encoder_2.modules())}
    modules = {k.split(".")[0] for k in keys}
    assert loaded == {"unet": sum(m.startswith("lora_unet_") for m in modules),
                      "te1": sum(m.startswith("lora_te1_") for m in modules),
                      "te2": sum(m.startswith("lora_te2_") for m in modules)}
    assert not torch.allclose(before, after)

    # The same effect as the trained adapter: the training UNet with the run's peft weights.
    from diffusers import UNet2DConditionModel

    from loradeck.trainer.train import lora_network, synthetic_sd
    from loradeck.trainer.train.state import newest_first  # noqa: F401

    unet = UNet2DConditionModel.from_pretrained(sdxl_tiny / "unet")
    lora_network.add_unet_lora(unet, rank=4, alpha=4.0, targets="attention")
    from loradeck.trainer.lora.sdxl_names import sgm_to_diffusers

    state = {}
    for k, v in tensors.items():
        if k.startswith("lora_unet_") and not k.endswith(".alpha"):
            module, _, suffix = k.partition(".")
            state[module] = state.get(module, {}) | {suffix: v}
    from loradeck.trainer.lora.file_format import module_path_from_kohya  # noqa: F401

    names = {n.replace(".", "_"): n for n, _ in unet.named_modules()}
    peft = {}
    for module, ab in state.items():
        sgm = module[len("lora_unet_"):]
        # resolve the SGM key through the module names of the SGM side
        dotted = next(sgm_to_diffusers(p, unet.config) for p in _sgm_paths(unet) if p.replace(".", "_") == sgm)
        assert dotted.replace(".", "_") in names
        peft[dotted + ".lora_A.weight"] = ab["lora_down.weight"]
        peft[dotted + ".lora_B.weight"] = ab["lora_up.weight"]
    lora_network.load_lora_state_dict(unet, peft)
    with torch.no_grad():
        ours = unet(x, t, h, added_cond_kwargs=cond).sample
    assert torch.allclose(ours, after, atol=1e-5)
    del synthetic_sd


def _diffusers_named_unet_key_in_an_sdxl_file_is_refused(good: Path, bad: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from loradeck.trainer.lora import validate as lora_validate

    with safe_open(good, "pt") as f:
        tensors, meta = {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata())
    renamed = {k.replace("lora_unet_input_blocks_4_1_", "lora_unet_down_blocks_1_attentions_0_"): v
               for k, v in tensors.items()}
    meta.pop("sshs_model_hash", None)
    save_file(renamed, bad, metadata=meta)
    report = lora_validate.check_rules(bad)
    assert not report.ok and any("SGM block name" in p.message for p in report.errors)


def _sgm_paths(unet):
    from loradeck.trainer.lora.sdxl_names import diffusers_to_sgm

    for name, module in unet.named_modules():
        if ".attentions." in name and name.endswith(("to_q", "to_k", "to_v", "to_out.0")):
            yield diffusers_to_sgm(name, unet.config)


def test_an_sdxl_project_prepares_1024_px_buckets_by_default(tmp_path):
    from loradeck.trainer.config import project_settings as settings
    from loradeck.trainer.dataset import project as project_mod

    xl = project_mod.create_project("xl", root=tmp_path, base_model="synthetic:sdxl-tiny")
    one = project_mod.create_project("one", root=tmp_path, base_model="synthetic:tiny")
    assert settings.load(xl.settings_file).prep.resolution == 1024
    assert settings.load(one.settings_file).prep.resolution == 512


def test_prep_records_the_original_size_and_crop_for_micro_conditioning(tmp_path):
    from PIL import Image

    from loradeck.trainer.dataset import prep
    from loradeck.trainer.dataset import project as project_mod

    proj = project_mod.create_project("p", root=tmp_path)
    Image.new("RGB", (300, 200), "red").save(proj.originals / "wide.png")
    prep.prep_project(proj, resolution=64, workers=1)
    entry = prep.load_manifest(proj)["wide"]
    assert entry["original"] == [300, 200]
    from loradeck.trainer.dataset import buckets

    fitted = buckets.fit(300, 200, prep.load_settings(proj, 64).spec)
    (rw, rh), (w, h) = fitted.resize_to, fitted.size
    assert (entry["width"], entry["height"]) == (w, h)
    assert entry["crop"] == [(rw - w) // 2, (rh - h) // 2]


def test_sdxl_time_ids_come_from_what_prep_recorded(tmp_path):
    from loradeck.trainer.train import sdxl_conditioning
    from loradeck.trainer.train.data import Item

    state = tmp_path / ".loradeck"
    state.mkdir()
    (state / "prep.json").write_text(json.dumps({"version": 1, "entries": {
        "a": {"output": "a.jpg", "original": [3000, 2000], "crop": [12, 0], "width": 96, "height": 64}}}))
    recorded = sdxl_conditioning.micro_conditioning(tmp_path)
    items = [Item(tmp_path / "dataset" / "a.jpg", "", (96, 64)), Item(tmp_path / "dataset" / "b.png", "", (64, 64))]
    ids = sdxl_conditioning.time_ids(items, recorded)
    assert ids.tolist() == [[2000, 3000, 0, 12, 64, 96], [64, 64, 0, 0, 64, 64]]


def test_sdxl_stop_then_resume_ends_where_an_uninterrupted_run_ends(sdxl_run):
    import threading

    from safetensors.torch import load_file

    from loradeck.trainer import events
    from loradeck.trainer.config.resolve import read_run_config
    from loradeck.trainer.runs.files import RunFiles
    from loradeck.trainer.train import loop as train_loop

    knobs = dict(max_train_steps=3, batch_size=1, save_precision="fp32", train_text_encoder=True,
                 shuffle_caption=True)
    whole = sdxl_run("whole", **knobs)
    assert train_in_process(whole) == 0
    split = sdxl_run("split", **knobs)
    files = RunFiles(split)
    cfg, dataset = read_run_config(files.config)
    stop = threading.Event()
    writer = events.EventWriter(files.events)

    class StopAfterOne:
        def emit(self, type_, **fields):
            if type_ == "step" and fields["step"] == 1:
                stop.set()
            return writer.emit(type_, **fields)

    outcome = train_loop.train(train_loop.RunContext(files=files, config=cfg, dataset=dataset,
                                                     events=StopAfterOne(), stop=stop))
    assert (outcome.status, outcome.steps_done) == ("stopped", 1)
    assert train_in_process(split, "--resume") == 0
    a, b = load_file(whole / "out.safetensors"), load_file(split / "out.safetensors")
    assert set(a) == set(b) and any(k.startswith("lora_te2_") for k in a)
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


def test_synthetic_sdxl_is_the_sdxl_base_architecture_and_builds_on_the_meta_device():
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from loradeck.trainer.train import synthetic_sd

    configs = synthetic_sd.component_configs("sdxl")
    with torch.device("meta"):
        unet = UNet2DConditionModel(**configs["unet"])
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"]))
    assert 2.55e9 < sum(p.numel() for p in unet.parameters()) < 2.58e9  # SDXL base UNet: 2.567 B
    assert 690e6 < sum(p.numel() for p in te2.parameters()) < 700e6     # OpenCLIP bigG text tower: 695 M
    assert unet.config.addition_embed_type == "text_time" and unet.config.cross_attention_dim == 2048


def test_an_sdxl_single_file_checkpoint_loads_offline_with_the_weights_it_was_written_from(tmp_path):
    import torch

    # sdxl-tiny with SDXL's 32 norm groups (a checkpoint's tensors do not say how many a norm has)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from ldm_layout import to_sdxl_single_file
    from safetensors.torch import save_file

    from loradeck.trainer.train import models, synthetic_sd

    configs = synthetic_sd.component_configs("sdxl-tiny")
    parts = synthetic_sd.build("sdxl-tiny")
    torch.manual_seed(1)
    parts["unet"] = UNet2DConditionModel(**dict(configs["unet"], norm_num_groups=32))
    parts["vae"] = AutoencoderKL(**dict(configs["vae"], norm_num_groups=32, block_out_channels=[32, 64]))
    path = tmp_path / "xl.safetensors"
    save_file(to_sdxl_single_file(parts["unet"], parts["vae"], parts["text_encoder"], parts["text_encoder_2"]),
              path)
    model = models.load_base_model(str(path))
    assert model.family == "sdxl" and models.base_model_version(model) == "sdxl_base_v1-0"
    for key in ("unet", "vae", "text_encoder", "text_encoder_2"):
        want, got = parts[key].state_dict(), getattr(model, key).state_dict()
        assert set(want) <= set(got) | {"text_model.embeddings.position_ids"}, key
        for name, tensor in want.items():
            if name in got:
                assert torch.equal(tensor, got[name]), (key, name)
    assert model.unet.config.transformer_layers_per_block == [1, 2]
    assert model.unet.config.addition_time_embed_dim == 8


def test_nan_latents_from_the_vae_are_diagnosed_as_the_vae_not_as_divergence(sdxl_run, monkeypatch):
    from loradeck.trainer.train import latent_cache

    real = latent_cache.encode_posterior

    def overflowing(*args, **kwargs):  # what SDXL's VAE does in fp16 on bright images
        mean, std = real(*args, **kwargs)
        return mean * float("nan"), std

    monkeypatch.setattr(latent_cache, "encode_posterior", overflowing)
    run = sdxl_run(max_train_steps=2, vae_fp32=False, mixed_precision="bf16")
    assert train_in_process(run) == 1
    [error] = events_of(run, "error")
    assert error["kind"] == "nan" and "VAE (bfloat16)" in error["message"] and "vae_fp32" in error["hint"]
