"""The GPU presets' names are their computed estimates (loradeck.trainer.gpu.vram_estimate): SD1.5 at 512 px, the
SDXL preset on SDXL base (synthetic:sdxl, meta device) at its 1024 px."""

from __future__ import annotations

import pytest

from loradeck.trainer.config import presets
from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.gpu import vram_estimate

GPU_PRESETS = [p for p in presets.PRESETS if p.estimate_gib is not None]


def test_the_gpu_presets_are_named_by_their_stored_estimate_and_one_at_batch_4_needs_at_most_4_gib_allocated():
    assert len(GPU_PRESETS) == 4
    assert presets.get(presets.SDXL_PRESET).estimate_model == "synthetic:sdxl"
    for p in GPU_PRESETS:
        assert p.name.startswith(f"{p.estimate_gib[1]:.1f} GiB")
    assert any(p.overrides.get("batch_size") == 4 and p.estimate_gib[0] <= 4.0 for p in GPU_PRESETS)


@pytest.mark.parametrize("preset", GPU_PRESETS, ids=lambda p: p.name)
def test_the_stored_estimate_is_what_the_estimator_computes_now(preset):
    est = vram_estimate.estimate(TrainConfig(**{"base_model": preset.estimate_model, "resolution": 512,
                                                **preset.overrides}))
    assert (round(est.expected_peak_bytes / presets.GiB, 2), round(est.nvidia_smi_bytes / presets.GiB, 2)) == \
        preset.estimate_gib, "recompute the table in trainer/config/presets.py (the estimator changed)"
