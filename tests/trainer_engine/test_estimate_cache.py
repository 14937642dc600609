"""An estimate of the same knobs on the same model is answered from the cache, and anything the answer
depends on (a knob, the model's configs) makes a new one."""

from __future__ import annotations

import json

import pytest

from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.gpu import estimate_cache, vram_estimate


@pytest.fixture
def cache_on(tmp_path, monkeypatch):
    monkeypatch.setenv("LORADECK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(vram_estimate.NO_CACHE_ENV, raising=False)
    traced = []
    real = vram_estimate._traced_estimate

    def counting(config, started):
        traced.append(config.batch_size)
        return real(config, started)

    monkeypatch.setattr(vram_estimate, "_traced_estimate", counting)
    return traced


def test_the_same_knobs_are_answered_without_a_trace_and_the_same_numbers(cache_on):
    cfg = TrainConfig(base_model="synthetic:tiny", resolution=64, batch_size=2)
    first = vram_estimate.estimate(cfg)
    again = vram_estimate.estimate(TrainConfig(base_model="synthetic:tiny", resolution=64, batch_size=2))
    assert cache_on == [2]
    assert {k: v for k, v in again.to_dict().items() if k != "seconds"} == \
        {k: v for k, v in first.to_dict().items() if k != "seconds"}
    vram_estimate.estimate(TrainConfig(base_model="synthetic:tiny", resolution=64, batch_size=3))
    assert cache_on == [2, 3]  # another knob: traced


def test_a_changed_model_config_is_a_new_key_and_an_unknown_model_is_not_cached(tmp_path):
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text(json.dumps({"block_out_channels": [32, 64]}))
    knobs = {"base_model": str(folder), "batch_size": 1}
    before = estimate_cache.key(knobs)
    (folder / "unet" / "config.json").write_text(json.dumps({"block_out_channels": [32, 64, 128]}))
    assert before and estimate_cache.key(knobs) not in (None, before)
    assert estimate_cache.key({"base_model": "someone/not-in-the-cache"}) is None


def test_a_corrupt_cache_entry_is_a_miss_and_is_replaced(cache_on):
    cfg = TrainConfig(base_model="synthetic:tiny", resolution=64, batch_size=1)
    key = estimate_cache.key({k: getattr(cfg, k) for k in vram_estimate.KNOB_FIELDS})
    estimate_cache.folder().mkdir(parents=True)
    (estimate_cache.folder() / f"{key}.json").write_text("{not json")
    assert vram_estimate.estimate(cfg).expected_peak_bytes > 0
    assert cache_on == [1]
    assert json.loads((estimate_cache.folder() / f"{key}.json").read_text())["expected_peak_bytes"] > 0
