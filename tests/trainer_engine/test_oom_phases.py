"""Out of GPU memory in every phase of a run (not only the training step) becomes an `error` event of
kind oom with that phase's hint: fault injection raises torch.OutOfMemoryError inside each phase."""

from __future__ import annotations

import pytest
import torch

from tests.trainer_engine.engine_helpers import events_of, train_in_process


def _raise_oom(*args, **kwargs):
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB (injected by test)")


@pytest.mark.parametrize("phase, target, overrides, hint", [
    ("loading model", "loradeck.trainer.train.models.load_base_model", {}, "--mixed-precision"),
    ("caching latents", "loradeck.trainer.train.latent_cache.LatentCache.fill", {"cache_latents": True}, "--batch-size"),
    ("caching text embeddings", "loradeck.trainer.train.latent_cache.TextEmbeddingCache.fill", {"cache_text_embeddings": True},
     "cache_text_embeddings = false"),
    ("sampling", "loradeck.trainer.train.sampling.sample_images",
     {"sample_prompts": ["sks toy"], "sample_every_steps": 1, "sample_steps": 2}, "sample less often"),
    ("saving checkpoint", "loradeck.trainer.lora.file_format.save_kohya_lora", {"save_every_steps": 1}, "resume"),
    ("exporting", "loradeck.trainer.lora.file_format.save_kohya_lora", {}, "exported again"),
])
def test_out_of_memory_in_each_phase_is_an_oom_error_with_that_phases_hint(make_run, monkeypatch, phase, target,
                                                                            overrides, hint):
    monkeypatch.setattr(target, _raise_oom)
    run = make_run(max_train_steps=2, **overrides)
    assert train_in_process(run) == 1
    [error] = events_of(run, "error")
    assert error["kind"] == "oom", error
    assert phase in error["message"] and "injected by test" in error["message"]
    assert hint in error["hint"]
    [finished] = events_of(run, "run_finished")
    assert finished["status"] == "failed"
    if phase in ("sampling", "saving checkpoint", "exporting"):  # after run_started
        [started] = events_of(run, "run_started")
        assert started["vram_estimate"] is None  # a CPU run: no GPU memory to predict (and no time spent on it)


def test_run_started_carries_the_estimate_a_cuda_run_is_compared_against(make_run):
    from loradeck.trainer.config.train_config import TrainConfig
    from loradeck.trainer.train import loop as train_loop

    warned = []
    estimate = train_loop.memory_estimate(TrainConfig(base_model="synthetic:tiny", resolution=64), warned.append)
    assert not warned
    assert estimate["expected_peak_bytes"] == sum(estimate["breakdown"].values()) > 0
    assert estimate["nvidia_smi_bytes"] > estimate["expected_peak_bytes"]


def test_out_of_memory_while_sampling_keeps_the_finished_step_as_resumable_state(make_run, monkeypatch):
    monkeypatch.setattr("loradeck.trainer.train.sampling.sample_images", _raise_oom)
    run = make_run(max_train_steps=3, sample_prompts=["sks toy"], sample_every_steps=2, sample_steps=2)
    assert train_in_process(run) == 1
    [error] = events_of(run, "error")
    assert error["kind"] == "oom" and "at step 2" in error["message"]
    assert error["state"] and error["state"].endswith("step-2")
