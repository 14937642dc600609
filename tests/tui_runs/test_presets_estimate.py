"""The GPU presets' names are their computed SD1.5 512 px estimates (loradeck.trainer.gpu.vram_estimate)."""

from __future__ import annotations

import pytest

from loradeck.trainer.config import presets
from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.gpu import vram_estimate

GPU_PRESETS = [p for p in presets.PRESETS if p.estimate_gib is not None]


def test_the_gpu_presets_are_named_by_their_stored_estimate_and_one_at_batch_4_needs_at_most_4_gib_allocated():
    assert len(GPU_PRESETS) == 3
    for p in GPU_PRESETS:
        assert p.name.startswith(f"{p.estimate_gib[1]:.1f} GiB")
    assert any(p.overrides.get("batch_size") == 4 and p.estimate_gib[0] <= 4.0 for p in GPU_PRESETS)


@pytest.mark.parametrize("preset", GPU_PRESETS, ids=lambda p: p.name)
def test_the_stored_estimate_is_what_the_estimator_computes_now(preset):
    est = vram_estimate.estimate(TrainConfig(base_model="synthetic:sd15", resolution=512, **preset.overrides))
    assert (round(est.expected_peak_bytes / presets.GiB, 2), round(est.nvidia_smi_bytes / presets.GiB, 2)) == \
        preset.estimate_gib, "recompute the table in trainer/config/presets.py (the estimator changed)"
