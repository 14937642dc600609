"""Training runs end to end (in this process, to share imports): events, knobs, caches, export, failures."""

from __future__ import annotations

import hashlib
import json
import re
import struct
import sys
from pathlib import Path

import pytest
from engine_helpers import REPO, events_of, train_in_process, write_images

sys.path.insert(0, str(REPO / "bench"))
from lora_eval import denoising_loss  # noqa: E402

KOHYA_KEY = re.compile(r"^lora_(unet|te)_[A-Za-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)$")


def started(run: Path) -> dict:
    return events_of(run, "run_started")[0]


def finished(run: Path) -> dict:
    [event] = events_of(run, "run_finished")
    return event


def validate_kohya_file(path: Path) -> dict:
    """Our own validator of the exported layout (ARCHITECTURE.md section 6); returns the tensors."""
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        keys = list(f.keys())
        tensors = {k: f.get_tensor(k) for k in keys}
        meta = f.metadata()
    assert keys and all(KOHYA_KEY.match(k) for k in keys), [k for k in keys if not KOHYA_KEY.match(k)][:3]
    modules = {k.rsplit(".", 2)[0] if k.endswith("weight") else k.rsplit(".", 1)[0] for k in keys}
    for m in modules:
        down, up, alpha = tensors[m + ".lora_down.weight"], tensors[m + ".lora_up.weight"], tensors[m + ".alpha"]
        assert alpha.dim() == 0 and down.shape[0] == up.shape[1]
        assert down.dim() == up.dim() in (2, 4)
    assert all(isinstance(v, str) for v in meta.values())
    for key in ("ss_base_model_version", "ss_network_dim", "ss_network_alpha", "ss_output_name",
                "ss_tag_frequency", "ss_resolution", "sshs_model_hash"):
        assert key in meta, key
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    assert meta["sshs_model_hash"] == hashlib.sha256(data[8 + n:]).hexdigest()
    return tensors


def test_run_trains_and_exports_a_kohya_lora_that_diffusers_loads(make_run, tiny_model, project_dir):
    run = make_run(max_train_steps=3, save_precision="fp16")
    assert train_in_process(run) == 0
    types = [e["type"] for e in events_of(run) if e["type"] not in ("gpu", "warning")]
    assert types == ["run_started", "step", "step", "step", "run_finished"]
    assert any("CPU" in e["message"] for e in events_of(run, "warning"))  # no GPU: trains with a warning
    ev = started(run)
    assert ev["environment"]["torch"] and "xformers" in ev["environment"] and ev["total_steps"] == 3
    assert ev["attention_processor"] == "AttnProcessor2_0" and ev["gradient_checkpointing"] is False
    steps = events_of(run, "step")
    assert [s["step"] for s in steps] == [1, 2, 3] and all(s["step_time"] > 0 for s in steps)
    assert finished(run)["status"] == "completed" and finished(run)["steps_done"] == 3
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == 3

    out = Path(finished(run)["output"])
    assert out == run / "out.safetensors"
    tensors = validate_kohya_file(out)
    from safetensors import safe_open

    with safe_open(out, "pt") as f:  # the metadata says when the run began, not when the file was saved
        assert abs(float(f.metadata()["ss_training_started_at"]) - ev["time"]) < 1e-3
    assert all(t.dtype.is_floating_point and str(t.dtype) == "torch.float16" for k, t in tensors.items()
               if not k.endswith(".alpha"))
    assert any("to_q" in k for k in tensors) and not any("ff_net" in k for k in tensors)
    from safetensors import safe_open

    with safe_open(out, "pt") as f:
        freq = json.loads(f.metadata()["ss_tag_frequency"])
    assert freq == {"1_proj": {"red circle": 4, "blue": 4, "style 0": 2, "style 1": 1, "style 2": 1}}

    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None, requires_safety_checker=False)
    x, t, h = torch.randn(1, 4, 32, 32), torch.tensor([500]), torch.randn(1, 77, 32)
    with torch.no_grad():
        before = pipe.unet(x, t, h).sample
        pipe.load_lora_weights(str(run), weight_name="out.safetensors")
        after = pipe.unet(x, t, h).sample
    assert not torch.allclose(before, after)


def test_exported_lora_lowers_the_denoising_loss_on_its_images(tmp_path, make_run, tiny_model):
    project = tmp_path / "learn"
    images = write_images(project / "dataset", 2, seed=3)
    run = make_run("learn", project=project, max_train_steps=6, learning_rate=4e-3, save_precision="fp32")
    assert train_in_process(run) == 0
    base = denoising_loss(tiny_model, images, None, timesteps=(200, 500, 800))
    trained = denoising_loss(tiny_model, images, run / "out.safetensors", timesteps=(200, 500, 800))
    assert trained < base * 0.99, (base, trained)


def test_attention_and_gradient_checkpointing_knobs_change_the_model(make_run):
    run = make_run(max_train_steps=1, attention="eager", gradient_checkpointing=True)
    assert train_in_process(run) == 0
    ev = started(run)
    assert ev["attention_processor"] == "AttnProcessor" and ev["gradient_checkpointing"] is True


def test_bf16_mixed_precision_trains_on_the_cpu(make_run):
    run = make_run(max_train_steps=1, mixed_precision="bf16", vae_fp32=False)
    assert train_in_process(run) == 0
    ev = started(run)
    assert ev["mixed_precision"] == "bf16" and ev["weight_dtype"] == "bfloat16" and ev["vae_dtype"] == "bfloat16"
    assert finished(run)["status"] == "completed"


def test_fp16_on_a_cpu_falls_back_with_a_warning(make_run):
    run = make_run(max_train_steps=1, mixed_precision="fp16")
    assert train_in_process(run) == 0
    assert started(run)["mixed_precision"] == "no"
    assert any("fp16" in e["message"] for e in events_of(run, "warning"))


def test_latents_are_cached_on_disk_by_content_and_reused(make_run, project_dir):
    knobs = dict(max_train_steps=1, cache_latents=True, cache_text_embeddings=True)
    first = make_run("first", **knobs)
    assert train_in_process(first) == 0
    assert started(first)["latent_cache"] == {"memory_hits": 0, "disk_hits": 0, "encoded": 4}
    assert started(first)["text_embeddings_cached"] == 3 + 1  # 3 distinct captions + the empty one
    cached = list((project_dir / ".loradeck" / "latents").rglob("*.safetensors"))
    assert len(cached) == 4 and all(re.match(r"[0-9a-f]{64}_64x64\.safetensors", p.name) for p in cached)

    second = make_run("second", **knobs)
    assert train_in_process(second) == 0
    assert started(second)["latent_cache"] == {"memory_hits": 0, "disk_hits": 4, "encoded": 0}

    write_images(project_dir / "dataset", 1, seed=99)  # img_000 now has other pixels: a new key
    third = make_run("third", **knobs)
    assert train_in_process(third) == 0
    assert started(third)["latent_cache"] == {"memory_hits": 0, "disk_hits": 3, "encoded": 1}


def test_cached_and_uncached_training_learn_the_same_weights(make_run):
    from safetensors.torch import load_file

    plain = make_run("plain", max_train_steps=2, save_precision="fp32")
    cached = make_run("cached", max_train_steps=2, save_precision="fp32", cache_latents=True,
                      cache_latents_to_disk=False, cache_text_embeddings=True)
    assert train_in_process(plain) == 0 and train_in_process(cached) == 0
    assert events_of(plain, "step")[0]["loss"] == pytest.approx(events_of(cached, "step")[0]["loss"], rel=1e-5)
    a, b = load_file(plain / "out.safetensors"), load_file(cached / "out.safetensors")
    assert a.keys() == b.keys()
    # Batching the VAE differently changes float rounding, and Adam's first steps amplify the sign of
    # near-zero gradients, so compare the adapters as a whole rather than element by element.
    diff = sum(float(((a[k] - b[k]) ** 2).sum()) for k in a) ** 0.5
    norm = sum(float((a[k] ** 2).sum()) for k in a if not k.endswith("alpha")) ** 0.5
    assert diff / norm < 0.02


def test_text_encoder_lora_with_kohya_targets_is_exported(make_run):
    run = make_run(max_train_steps=1, train_text_encoder=True, target_modules="kohya", text_encoder_lr=5e-4)
    assert train_in_process(run) == 0
    tensors = validate_kohya_file(run / "out.safetensors")
    assert any(k.startswith("lora_te_") and "fc1" in k for k in tensors)
    proj_in = [t for k, t in tensors.items() if "proj_in.lora_down" in k]
    assert proj_in and all(t.dim() == 4 for t in proj_in)  # 1x1 conv keeps 4-D weights
    assert any("ff_net_0_proj" in k for k in tensors)
    assert events_of(run, "step")[0]["lr_te"] == pytest.approx(5e-4)


def test_schedule_accumulation_and_loss_knobs(make_run):
    run = make_run(max_train_steps=3, lr_scheduler="linear", lr_warmup_steps=2, gradient_accumulation_steps=2,
                   batch_size=1, min_snr_gamma=5.0, noise_offset=0.1, prediction_type="v_prediction",
                   shuffle_caption=True, keep_tokens=1, caption_dropout_rate=0.3, repeats=2)
    assert train_in_process(run) == 0
    ev = started(run)
    assert ev["prediction_type"] == "v_prediction" and ev["batches_per_epoch"] == 8
    lrs = [s["lr"] for s in events_of(run, "step")]
    assert lrs[0] < lrs[1]  # warmup
    assert [s["epoch"] for s in events_of(run, "step")] == [1, 1, 1]
    assert all(s["loss"] == s["loss"] for s in events_of(run, "step"))  # finite


def test_epochs_checkpoints_and_samples(make_run):
    run = make_run(max_train_steps=None, max_train_epochs=3, save_every_epochs=1, save_last_n=1,
                   sample_every_epochs=2, sample_prompts=["red circle", "blue"], sample_steps=2, repeats=1,
                   batch_size=4)
    assert train_in_process(run) == 0
    assert started(run)["total_steps"] == 3  # 4 images / batch 4 x 3 epochs
    checkpoints = events_of(run, "checkpoint")
    assert [c["step"] for c in checkpoints] == [1, 2]  # the last epoch is the final export
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["out-step00000002.safetensors"]  # keep 1
    validate_kohya_file(run / "checkpoints" / "out-step00000002.safetensors")
    assert sorted(p.name for p in (run / "state").iterdir()) == ["step-1", "step-2"]
    samples = events_of(run, "sample")
    assert [(s["step"], s["prompt"]) for s in samples] == [(2, "red circle"), (2, "blue")]
    from PIL import Image

    with Image.open(samples[0]["path"]) as im:
        assert im.size == (64, 64)


def test_stop_then_resume_ends_where_an_uninterrupted_run_ends(make_run):
    """Stopped after step 2 of 4 and resumed: same total steps, and the same weights as one go."""
    import threading

    from safetensors.torch import load_file

    from loradeck.trainer import events
    from loradeck.trainer.config.resolve import read_run_config
    from loradeck.trainer.runs.files import RunFiles
    from loradeck.trainer.train import loop as train_loop

    knobs = dict(max_train_steps=4, batch_size=1, save_precision="fp32", lr_scheduler="cosine",
                 shuffle_caption=True, caption_dropout_rate=0.2)
    whole = make_run("whole", **knobs)
    assert train_in_process(whole) == 0

    split = make_run("split", **knobs)
    files = RunFiles(split)
    cfg, dataset = read_run_config(files.config)
    stop = threading.Event()
    writer = events.EventWriter(files.events)

    class StopAfterTwo:
        def emit(self, type_, **fields):
            if type_ == "step" and fields["step"] == 2:
                stop.set()
            return writer.emit(type_, **fields)

    outcome = train_loop.train(train_loop.RunContext(files=files, config=cfg, dataset=dataset,
                                                     events=StopAfterTwo(), stop=stop))
    assert (outcome.status, outcome.steps_done) == ("stopped", 2)
    assert (split / "state" / "step-2" / "meta.json").is_file()
    assert train_in_process(split, "--resume") == 0
    assert [s["step"] for s in events_of(split, "step")] == [1, 2, 3, 4]
    assert events_of(split, "run_started")[-1]["start_step"] == 2
    a, b = load_file(whole / "out.safetensors"), load_file(split / "out.safetensors")
    for k in a:
        assert (a[k] - b[k]).abs().max() < 1e-5, k


def test_nan_loss_becomes_an_error_event_with_a_hint(make_run):
    run = make_run(max_train_steps=4, learning_rate=1e30, max_grad_norm=0.0)
    assert train_in_process(run) == 1
    [error] = events_of(run, "error")
    assert error["kind"] == "nan" and "learning rate" in error["hint"]
    assert finished(run)["status"] == "failed"
    assert json.loads((run / "status.json").read_text())["state"] == "failed"


def test_out_of_memory_becomes_an_error_event_with_the_knobs_and_saved_state(make_run, monkeypatch):
    monkeypatch.setenv("LORADECK_FAULT", "oom:2")
    run = make_run(max_train_steps=4, batch_size=2)
    assert train_in_process(run) == 1
    [error] = events_of(run, "error")
    assert error["kind"] == "oom" and "gradient checkpointing" in error["hint"] and "batch" in error["hint"]
    assert error["state"].endswith("step-1") and Path(error["state"], "meta.json").is_file()
    assert finished(run)["status"] == "failed" and finished(run)["steps_done"] == 1


@pytest.mark.parametrize("knob, expected", [
    ({"optimizer": "adamw8bit"}, "bitsandbytes"),
    ({"base_model": "/nonexistent/model"}, "does not exist"),
])
def test_unavailable_knobs_and_models_fail_with_clear_errors(make_run, knob, expected):
    run = make_run(max_train_steps=1, **knob)
    assert train_in_process(run) == 1
    [error] = events_of(run, "error")
    assert expected in error["message"] and error["kind"] in ("config", "model") and error["hint"]
    assert finished(run)["status"] == "failed"


def test_xformers_without_the_package_trains_on_sdpa_with_a_warning_event(make_run, monkeypatch):
    from loradeck.trainer.train import optional_packages

    monkeypatch.setattr(optional_packages, "installed", lambda name: name != "xformers")
    run = make_run(max_train_steps=1, attention="xformers")
    assert train_in_process(run) == 0
    assert finished(run)["status"] == "completed"
    assert any("using sdpa instead" in w["message"] for w in events_of(run, "warning"))


def test_adamw_uses_the_fused_kernel_for_fp32_adapters_only():
    import torch

    from loradeck.trainer.config.train_config import from_mapping
    from loradeck.trainer.train.loop import make_optimizer

    cfg = from_mapping({"base_model": "synthetic:tiny"})
    fp32 = [torch.nn.Parameter(torch.zeros(4, 4))]
    assert make_optimizer(cfg, fp32, []).defaults["fused"] is True
    half = [torch.nn.Parameter(torch.zeros(4, 4, dtype=torch.float16))]
    assert not make_optimizer(cfg, half, []).defaults["fused"]


def test_kohya_folder_repeats_in_the_run_config_shape_the_epoch(make_run, project_dir):
    stem = sorted(p.stem for p in (project_dir / "dataset").glob("*.png"))[0]
    run = make_run("repeats", max_train_steps=None, max_train_epochs=1, batch_size=1,
                   image_repeats={stem: 3})
    assert train_in_process(run) == 0
    assert started(run)["batches_per_epoch"] == 4 + 2  # 4 images, one of them seen 3 times
    assert finished(run)["steps_done"] == 6
    from safetensors import safe_open

    with safe_open(run / "out.safetensors", "pt") as f:  # kohya's metadata: one folder per repeat count
        meta = f.metadata()
    assert json.loads(meta["ss_dataset_dirs"]) == {"1_proj": {"n_repeats": 1, "img_count": 3},
                                                   "3_proj": {"n_repeats": 3, "img_count": 1}}
    assert sorted(json.loads(meta["ss_tag_frequency"])) == ["1_proj", "3_proj"]
    assert meta["ss_num_train_images"] == "6"


def test_a_full_disk_at_a_checkpoint_fails_clearly_keeps_the_last_good_state_and_resumes(make_run, monkeypatch):
    import errno

    import torch

    from loradeck.trainer.lora.validate import check_rules
    from loradeck.trainer.train import state as train_state

    run = make_run("full-disk", max_train_steps=6, batch_size=1, save_every_steps=2)
    real_save = torch.save

    def disk_fills_at_step_4(obj, f, *args, **kwargs):
        if ".tmp-step-4" in str(f):
            with open(f, "wb") as fh:
                fh.write(b"\0" * 100)  # a partial file, as a full disk leaves one
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_fills_at_step_4)
    assert train_in_process(run) == 1
    [error] = events_of(run, "error")
    assert error["kind"] == "io" and "No space left on device" in error["message"]
    assert "disk space" in error["hint"]
    assert finished(run)["status"] == "failed"
    # the last good state and checkpoint are whole; nothing partial is left behind
    assert train_state.latest(run / "state").step == 2
    assert not [p for p in (run / "state").iterdir() if p.name.startswith(".tmp")]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["out-step00000002.safetensors"]
    assert check_rules(run / "checkpoints" / "out-step00000002.safetensors").ok

    monkeypatch.setattr(torch, "save", real_save)  # space freed: resume continues from step 2
    assert train_in_process(run, "--resume") == 0
    assert events_of(run, "run_started")[-1]["start_step"] == 2
    last = events_of(run, "run_finished")[-1]
    assert (last["status"], last["steps_done"]) == ("completed", 6) and (run / "out.safetensors").is_file()


def test_resume_skips_a_damaged_newest_state_and_says_so(make_run):
    """A corrupt file in the newest state (disk error, a bad copy) falls back to the state before it;
    none usable is a clear error. Nothing is half-restored from a damaged state."""
    import tomllib

    from loradeck.trainer.train import state as train_state

    run = make_run("damaged", max_train_steps=4, batch_size=1, save_every_steps=1)
    assert train_in_process(run) == 0
    assert [s.step for s in train_state.newest_first(run / "state")] == [3, 2]
    config = (run / "config.toml").read_text().replace("max_train_steps = 4", "max_train_steps = 6")
    assert tomllib.loads(config)["max_train_steps"] == 6
    (run / "config.toml").write_text(config)  # train further from the saved states
    (run / "state" / "step-3" / "optimizer.pt").write_bytes(b"PK\x03\x04 truncated")

    assert train_in_process(run, "--resume") == 0
    assert events_of(run, "run_started")[-1]["start_step"] == 2
    assert any("step-3" in w["message"] and "cannot be used" in w["message"] for w in events_of(run, "warning"))
    assert events_of(run, "run_finished")[-1]["steps_done"] == 6

    for state in train_state.newest_first(run / "state"):  # now every state is damaged
        (state.path / "lora_unet.safetensors").write_bytes(b"not safetensors")
    assert train_in_process(run, "--resume") == 1
    error = events_of(run, "error")[-1]
    assert error["kind"] == "config" and "no usable saved state" in error["message"]
    assert "start a new run" in error["hint"]
