"""Aspect-ratio buckets: kohya's rules at 512 px, scaled rules at tiny resolutions, no upscaling."""

from __future__ import annotations

import pytest

from loradeck.trainer.dataset import buckets


def test_512_buckets_are_kohya_style():
    spec = buckets.make_spec(512)
    found = buckets.standard_buckets(spec)
    assert spec.step == 64 and (spec.min_side, spec.max_side) == (256, 1024)
    assert {(512, 512), (640, 384), (384, 640), (768, 320), (1024, 256), (256, 1024)} <= set(found)
    for w, h in found:
        assert w % 64 == 0 and h % 64 == 0
        assert w * h <= 512 * 512
        assert 256 <= w <= 1024 and 256 <= h <= 1024


def test_tiny_resolution_scales_step_and_sides_down():
    spec = buckets.make_spec(64)
    assert spec.step == 8 and (spec.min_side, spec.max_side) == (32, 128)
    found = buckets.standard_buckets(spec)
    assert (64, 64) in found and len(found) > 5
    assert all(w % 8 == 0 and h % 8 == 0 and w * h <= 64 * 64 for w, h in found)


@pytest.mark.parametrize("size", [(3000, 2000), (2000, 3000), (4000, 1000), (1024, 1024), (513, 700)])
def test_large_images_get_the_closest_aspect_bucket_and_are_only_downscaled(size):
    spec = buckets.make_spec(512)
    fit = buckets.fit(*size, spec)
    assert fit.size in buckets.standard_buckets(spec) and not fit.small
    rw, rh = fit.resize_to
    assert rw >= fit.width and rh >= fit.height  # covers the bucket, then a centre crop
    assert rw <= size[0] and rh <= size[1]       # never upscaled
    best = min(abs(w / h - size[0] / size[1]) for w, h in buckets.standard_buckets(spec))
    assert abs(fit.width / fit.height - size[0] / size[1]) == pytest.approx(best)


def test_small_images_get_their_own_bucket_without_upscaling():
    spec = buckets.make_spec(512)
    fit = buckets.fit(300, 200, spec)
    assert fit.small and fit.size == (256, 192)
    assert fit.resize_to[0] <= 300 and fit.resize_to[1] <= 200


def test_square_crop_mode_has_one_bucket():
    spec = buckets.make_spec(512, square=True)
    assert buckets.standard_buckets(spec) == ((512, 512),)
    assert buckets.fit(3000, 2000, spec).size == (512, 512)
    small = buckets.fit(300, 200, spec)
    assert small.small and small.size == (192, 192)


def test_dataset_modules_stay_light_for_the_tui():
    import subprocess
    import sys

    from tests.conftest import REPO

    code = ("import sys, loradeck.trainer.dataset.importer, loradeck.trainer.dataset.prep, loradeck.trainer.dataset.caption_ops, loradeck.trainer.dataset.preflight, loradeck.trainer.dataset.buckets,"
            " loradeck.trainer.dataset.image_probe, loradeck.trainer.cli.cmd_dataset, loradeck.trainer.cli.cmd_captions;"
            " print('\\n'.join(sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            check=True).stdout.split()
    assert not {m for m in loaded if m.split(".")[0] in {"torch", "textual", "diffusers", "transformers"}}
