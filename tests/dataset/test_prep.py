"""Prep: orientation, colour modes, buckets as exact pixel sizes, incremental and parallel runs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.dataset import buckets, prep
from loradeck.trainer.dataset.importer import import_paths
from tests.dataset.conftest import GOOD, noise, sha


def _pixel(path: Path, fx: float, fy: float) -> tuple[int, int, int]:
    with Image.open(path) as im:
        return im.convert("RGB").getpixel((int(im.width * fx), int(im.height * fy)))


def _close(rgb, want, tol=40) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(rgb, want))


@pytest.fixture
def prepared(project, mixed):
    settings.update(project.settings_file, "prep", {"resolution": 64, "background": "#ffffff"})
    import_paths(project, [mixed["portrait.jpg"].parent])
    originals_before = {p.name: sha(p) for p in project.originals.iterdir()}
    report = prep.prep_project(project, workers=2)
    return project, report, originals_before


def test_every_original_becomes_an_rgb_image_whose_size_is_its_bucket(prepared):
    project, report, _ = prepared
    assert report.failed == [] and len(report.prepared) == len(GOOD)
    spec = prep.load_settings(project).spec
    manifest = prep.load_manifest(project)
    for stem, entry in manifest.items():
        out = project.dataset / entry["output"]
        with Image.open(out) as im:
            assert im.mode == "RGB"
            assert im.size == (entry["width"], entry["height"])
            assert im.width % 8 == 0 and im.height % 8 == 0
        with Image.open(project.originals / entry["source"]) as orig:
            w, h = orig.size
            if entry["source"] == "portrait.jpg":
                w, h = h, w
        assert buckets.fit(w, h, spec).size == im.size
    assert sum(report.buckets.values()) == len(GOOD)


def test_exif_orientation_is_applied(prepared):
    project, _, _ = prepared
    out = project.dataset / "portrait.jpg"
    with Image.open(out) as im:
        assert im.height > im.width  # stored landscape, displayed portrait
    # Orientation 6 turns the stored top (red) to the right side.
    assert _close(_pixel(out, 0.85, 0.5), (220, 20, 20)) and _close(_pixel(out, 0.15, 0.5), (20, 20, 220))


def test_cmyk_16bit_palette_and_alpha_become_correct_rgb(prepared):
    project, _, _ = prepared
    d = project.dataset
    assert _close(_pixel(d / "cmyk.jpg", 0.5, 0.5), (237, 28, 36), tol=60)  # red, not inverted
    with Image.open(d / "deep16.png") as im:
        mean = np.asarray(im).mean()
    assert 100 < mean < 156, "16-bit data must be scaled, not clipped to white"
    for name in ("palette.png", "palette-2.png"):  # .gif and .png of the same picture
        assert _close(_pixel(d / name, 0.2, 0.5), (255, 255, 255), tol=5)  # transparent -> background
        assert _close(_pixel(d / name, 0.8, 0.5), (0, 160, 0), tol=10)
    assert _close(_pixel(d / "alpha.png", 0.5, 0.2), (255, 255, 255), tol=5)
    assert _close(_pixel(d / "alpha.png", 0.5, 0.8), (0, 0, 255), tol=10)


def test_prep_never_touches_originals_or_captions(prepared):
    project, _, originals_before = prepared
    captions = {p.name: sha(p) for p in project.dataset.glob("*.txt")}
    assert captions
    prep.prep_project(project, resolution=96)
    assert {p.name: sha(p) for p in project.originals.iterdir()} == originals_before
    assert {p.name: sha(p) for p in project.dataset.glob("*.txt")} == captions


def _three(project, tmp_path):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for i in range(3):
        noise(120 + 20 * i, 90, seed=i).save(src / f"img{i}.png")
    import_paths(project, [src])


def test_incremental_prep_skips_unchanged_and_redoes_changed(small_project, tmp_path):
    _three(small_project, tmp_path)
    first = prep.prep_project(small_project)
    assert len(first.prepared) == 3 and first.skipped == 0
    assert prep.prep_project(small_project).skipped == 3
    # Touched but identical: re-hashed, not redone.
    os.utime(small_project.originals / "img0.png", ns=(1, 1))
    again = prep.prep_project(small_project)
    assert again.prepared == [] and again.skipped == 3
    # New content: redone.
    noise(100, 100, seed=99).save(small_project.originals / "img1.png")
    changed = prep.prep_project(small_project)
    assert changed.prepared == ["img1.png"] and changed.skipped == 2
    # Other settings: everything is redone.
    assert len(prep.prep_project(small_project, resolution=32).prepared) == 3


def test_prep_at_another_resolution_is_remembered_for_prep_check_and_training(small_project, tmp_path):
    from loradeck.trainer.config import resolve as run_config
    from loradeck.trainer.dataset import preflight

    _three(small_project, tmp_path)
    (small_project.settings_file).write_text(small_project.settings_file.read_text()
                                             + "# the user's own note, kept\n")
    assert len(prep.prep_project(small_project, resolution=32).prepared) == 3
    assert settings.load(small_project.settings_file).prep.resolution == 32
    assert "# the user's own note, kept" in small_project.settings_file.read_text()
    assert prep.prep_project(small_project).skipped == 3  # no flag: still 32, nothing to redo
    resolved = run_config.resolve(small_project)
    assert resolved.config.resolution == 32 and resolved.sources["resolution"] == "project.toml [prep] resolution"
    report = preflight.check(small_project)
    assert report["resolution"] == 32
    assert not any("other settings" in str(p) or "another resolution" in str(p) for p in report["problems"])
    assert run_config.resolve(small_project, {"resolution": 64}).config.resolution == 64  # a flag still wins


def test_removed_original_removes_its_prepared_image_but_never_its_caption(small_project, tmp_path):
    _three(small_project, tmp_path)
    prep.prep_project(small_project)
    (small_project.dataset / "img2.txt").write_text("keep me\n")
    (small_project.dataset / "mine.png").write_bytes((small_project.dataset / "img0.png").read_bytes())
    (small_project.originals / "img2.png").unlink()
    report = prep.prep_project(small_project)
    assert report.removed == ["img2.png"]
    assert not (small_project.dataset / "img2.png").exists()
    assert (small_project.dataset / "img2.txt").read_text() == "keep me\n"
    assert (small_project.dataset / "mine.png").exists()  # not prep's: left alone


def test_parallel_and_single_process_prep_give_identical_images(small_project, tmp_path):
    _three(small_project, tmp_path)
    prep.prep_project(small_project, workers=1)
    single = {p.name: sha(p) for p in small_project.dataset.glob("*.png")}
    report = prep.prep_project(small_project, workers=2, force=True)
    assert report.workers == 2 and len(report.prepared) == 3
    assert {p.name: sha(p) for p in small_project.dataset.glob("*.png")} == single


def test_a_broken_original_fails_alone(small_project, tmp_path):
    _three(small_project, tmp_path)
    (small_project.originals / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    report = prep.prep_project(small_project, workers=2)
    assert [name for name, _ in report.failed] == ["broken.png"]
    assert len(report.prepared) == 3


def test_two_originals_with_one_stem_are_not_mixed_up(small_project, tmp_path):
    _three(small_project, tmp_path)
    noise(50, 50, seed=7).save(small_project.originals / "img0.jpg", "JPEG")  # copied in by hand
    report = prep.prep_project(small_project)
    assert report.failed == [("img0.png", "another original has the stem 'img0'; rename one")]
    assert len(report.prepared) == 3


def test_stop_request_keeps_finished_images_and_the_next_run_completes(small_project, tmp_path):
    _three(small_project, tmp_path)
    done = []
    report = prep.prep_project(small_project, workers=1, on_progress=lambda d, *_: done.append(d),
                               should_stop=lambda: len(done) >= 2)
    assert report.stopped and len(report.prepared) == 1
    follow_up = prep.prep_project(small_project)
    assert follow_up.skipped == 1 and len(follow_up.prepared) == 2 and not follow_up.stopped


def test_square_crop_setting_gives_square_images(small_project, tmp_path):
    _three(small_project, tmp_path)
    settings.update(small_project.settings_file, "prep", {"square_crop": True})
    report = prep.prep_project(small_project)
    assert report.buckets == {"64x64": 3}


def test_small_images_are_not_upscaled_and_are_reported(small_project, tmp_path):
    src = tmp_path / "small"
    src.mkdir()
    noise(40, 30).save(src / "tiny.png")
    import_paths(small_project, [src])
    report = prep.prep_project(small_project)
    assert report.small == ["tiny.png"]
    with Image.open(small_project.dataset / "tiny.png") as im:
        assert im.size == (40, 24)


def test_an_image_under_8_px_is_refused_not_upscaled(small_project, tmp_path):
    src = tmp_path / "specks"
    src.mkdir()
    noise(5, 40).save(src / "sliver.png")
    noise(40, 12).save(src / "strip.png")
    import_paths(small_project, [src])
    report = prep.prep_project(small_project)
    assert [name for name, _ in report.failed] == ["sliver.png"]
    assert "too small" in report.failed[0][1]
    with Image.open(small_project.dataset / "strip.png") as im:
        assert im.size == (40, 8)


def test_a_second_prep_of_the_same_project_is_refused_while_one_runs(small_project, tmp_path):
    from loradeck.trainer.errors import LoradeckError

    _three(small_project, tmp_path)
    inner = []

    def during(done, *_):
        if done == 1 and not inner:
            with pytest.raises(LoradeckError, match="already running"):
                prep.prep_project(small_project)
            inner.append(True)

    assert len(prep.prep_project(small_project, workers=1, on_progress=during).prepared) == 3
    assert inner and prep.prep_project(small_project).skipped == 3  # the lock is released


def test_background_colour_comes_from_project_settings(small_project, tmp_path):
    src = tmp_path / "a"
    src.mkdir()
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(src / "clear.png")
    import_paths(small_project, [src])
    settings.update(small_project.settings_file, "prep", {"background": "#ff0000"})
    prep.prep_project(small_project)
    assert _pixel(small_project.dataset / "clear.png", 0.5, 0.5) == (255, 0, 0)


def test_a_full_disk_fails_each_image_with_a_reason_and_leaves_no_partial_files(small_project, tmp_path,
                                                                                monkeypatch):
    import errno

    from loradeck.trainer import atomic

    _three(small_project, tmp_path)
    real_replace = os.replace

    def no_space(src, dst):
        if str(dst).startswith(str(small_project.dataset)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", no_space)
    report = prep.prep_project(small_project, workers=1)
    assert [why for _, why in report.failed] == ["No space left on device"] * 3
    assert not [p for p in small_project.dataset.iterdir() if p.suffix in (".png", ".jpg", ".part")]
    monkeypatch.undo()
    assert len(prep.prep_project(small_project).prepared) == 3  # nothing recorded as done
