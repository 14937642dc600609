"""Preflight: the problems a run would hit, the bucket histogram and the step count."""

from __future__ import annotations

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.dataset import preflight, prep
from loradeck.trainer.dataset.importer import import_paths
from tests.dataset.conftest import noise


def _codes(report) -> dict[str, dict]:
    return {p["code"]: p for p in report["problems"]}


def test_empty_project_is_an_error(small_project):
    report = preflight.check(small_project)
    assert not report["ok"] and "no_images" in _codes(report)


def test_report_flags_caption_traps_small_images_and_duplicates(small_project, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        noise(96, 96, seed=i).save(src / f"img{i}.png")
    noise(40, 30, seed=9).save(src / "tiny.png")
    (src / "img0.txt").write_text("sks, a photo")
    (src / "img1.caption").write_text("kohya style")
    import_paths(small_project, [src])
    prep.prep_project(small_project)
    (small_project.dataset / "img3.caption").write_text("only the ignored one")
    (small_project.dataset / "copy.png").write_bytes((small_project.dataset / "img2.png").read_bytes())
    settings.update(small_project.settings_file, "project", {"caption_extension": ".txt"})

    report = preflight.check(small_project, TrainConfig(resolution=64, repeats=3, max_train_epochs=2,
                                                        batch_size=2))
    codes = _codes(report)
    assert codes["ignored_extension"]["level"] == "error"
    assert [i["image"] for i in codes["ignored_extension"]["items"]] == ["img3.png"]
    assert set(codes["uncaptioned"]["items"]) == {"copy.png", "img2.png", "tiny.png"}
    assert [i["image"] for i in codes["small_images"]["items"]] == ["tiny.png"]
    assert codes["duplicates"]["items"] == [["copy.png", "img2.png"]]
    assert not report["ok"] and report["errors"] == 1
    assert report["buckets"] == {"64x64": 5, "40x24": 1}
    assert "thin_buckets" in codes  # the 40x24 bucket holds 1 image, batch is 2
    # batched per bucket, as the trainer does: 5 x 3 = 15 in 64x64 -> 8 batches, 1 x 3 in 40x24 -> 2,
    # so 10 steps an epoch (not ceil(6 x 3 / 2) = 9), x 2 epochs
    assert report["steps"]["steps_per_epoch"] == 10 and report["steps"]["total_steps"] == 20


def test_unprepared_and_stale_originals_and_missing_trigger_words(project, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    noise(80, 80, seed=1).save(src / "a.png")
    (src / "a.txt").write_text("a cat on a mat")
    import_paths(project, [src])
    codes = _codes(preflight.check(project, TrainConfig(resolution=64)))
    assert codes["unprepared"]["items"] == ["a.png"] and "no_images" in codes
    prep.prep_project(project, resolution=64)
    report = preflight.check(project, TrainConfig(resolution=64))
    assert report["ok"] and "unprepared" not in _codes(report)
    assert _codes(report)["trigger_missing"]["items"] == ["a.png"]  # project trigger is 'sks cat'
    stale = _codes(preflight.check(project, TrainConfig(resolution=32)))
    assert stale["stale_prep"]["items"] == ["a.png"] and "large_images" in stale


def test_fixed_step_count_wins_and_text_render_mentions_it(small_project, tmp_path):
    noise(64, 64).save(small_project.dataset / "x.png")
    report = preflight.check(small_project, TrainConfig(resolution=64, max_train_steps=123))
    assert report["steps"]["total_steps"] == 123
    assert "123 steps (fixed)" in preflight.render(report)


def test_default_config_comes_from_project_toml_train_table(small_project):
    for i in range(3):
        noise(64, 64, seed=i).save(small_project.dataset / f"x{i}.png")
    settings.update(small_project.settings_file, "train", {"repeats": 4, "max_train_epochs": 5,
                                                           "batch_size": 2, "resolution": 64})
    steps = preflight.check(small_project)["steps"]
    assert (steps["repeats"], steps["epochs"], steps["batch_size"]) == (4, 5, 2)
    assert steps["total_steps"] == 6 * 5  # ceil(3 x 4 / 2) = 6 steps an epoch
