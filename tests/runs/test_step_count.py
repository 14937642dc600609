"""One step formula (loradeck.trainer.train.step_count) for `check`, the train form and the trainer: batches
are cut per bucket, so every bucket may end in a partial batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.dataset.importer import import_paths
from loradeck.trainer.dataset.prep import prep_project
from loradeck.trainer.dataset.project import create_project
from loradeck.trainer.dataset.repeat_folders import image_repeats
from loradeck.trainer.events import read_all
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.train import step_count
from loradeck.trainer.train.data import BatchPlan, Item
from loradeck.tui.screens.train_form import step_summary

# Three buckets holding 5, 3 and 1 images.
SIZES = {**{f"a{i}.png": (64, 64) for i in range(5)}, **{f"b{i}.png": (72, 56) for i in range(3)},
         "c0.png": (56, 72)}


def test_the_formula_against_hand_counted_batches():
    assert step_count.batches_per_epoch([5, 3, 1], batch_size=2) == 3 + 2 + 1
    assert step_count.batches_per_epoch([5, 3, 1], batch_size=2, num_processes=2) == 3
    assert step_count.batches_per_epoch([1], batch_size=4, num_processes=2) == 1  # never 0

    # repeats 3: 15, 9 and 3 appearances -> 8 + 5 + 2 = 15 batches an epoch (not ceil(27 / 2) = 14)
    count = step_count.count(TrainConfig(base_model="synthetic:tiny", batch_size=2, repeats=3, max_train_epochs=2), SIZES)
    assert (count.images, count.buckets, count.batches_per_epoch, count.steps_per_epoch, count.total_steps) == \
        (9, 3, 15, 15, 30)
    # gradient accumulation spans the epoch boundary: ceil(15 x 2 / 4) = 8 steps, 4 an epoch (rounded up)
    count = step_count.count(TrainConfig(base_model="synthetic:tiny", batch_size=2, repeats=3, max_train_epochs=2,
                                         gradient_accumulation_steps=4),
                             SIZES)
    assert (count.steps_per_epoch, count.total_steps) == (4, 8)
    # kohya folder repeats: a0 counts 4 times -> bucket 64x64 holds 8 -> 4 + 2 + 1 = 7 batches
    count = step_count.count(TrainConfig(base_model="synthetic:tiny", batch_size=2, repeats=1, max_train_epochs=1), SIZES,
                             {"a0": 4})
    assert (count.weighted_images, count.batches_per_epoch, count.total_steps) == (12, 7, 7)
    # --steps wins; no images, no steps
    assert step_count.count(TrainConfig(max_train_steps=7, max_train_epochs=None), SIZES).total_steps == 7
    assert step_count.count(TrainConfig(), {}).total_steps == 0


def test_the_trainers_batch_plan_is_the_formula(tmp_path):
    items = [Item(tmp_path / name, "", size) for name, size in SIZES.items()]
    plan = BatchPlan(items, batch_size=2, repeats=3, seed=1)
    assert plan.batches_per_epoch == 15
    epoch = [plan.micro_batch(k) for k in range(plan.batches_per_epoch)]
    assert {e for e, _ in epoch} == {0} and sum(len(batch) for _, batch in epoch) == 27
    assert all(len({i.bucket for i in batch}) == 1 for _, batch in epoch)  # never two buckets in a batch
    assert sorted(len(batch) for _, batch in epoch).count(1) == 3  # one partial batch per bucket


@pytest.mark.slow
def test_check_the_form_and_a_real_run_count_the_same_steps(root, tmp_path, cli):
    """The acceptance test of issue 13, point 5: buckets of 5, 3 and 1 images, batch 4, repeats 2,
    2 epochs: `check --json`, the train form's step line and the steps the trainer takes are all 12."""
    project = create_project("toy", root, trigger_word="sks", base_model="synthetic:tiny")
    src = tmp_path / "originals"
    src.mkdir()
    for k, (w, h) in enumerate([(64, 64)] * 5 + [(96, 64)] * 3 + [(64, 96)]):
        Image.new("RGB", (w, h), (40 * k % 256, 90, 200 - 20 * k)).save(src / f"img{k}.png")
        (src / f"img{k}.txt").write_text(f"sks, shape {k}")
    import_paths(project, [src])
    settings.update(project.settings_file, "prep", {"resolution": 64})
    prep_project(project)
    settings.update(project.settings_file, "train", {
        "resolution": 64, "mixed_precision": "no", "batch_size": 4, "repeats": 2, "max_train_epochs": 2,
        "rank": 4})

    checked = json.loads(cli("check", "toy", "--json", root=root).stdout)
    assert sorted(checked["buckets"].values()) == [1, 3, 5]
    # 10, 6 and 2 appearances an epoch -> 3 + 2 + 1 batches, x 2 epochs; the old images-only count said
    # ceil(9 x 2 / 4) x 2 = 10
    assert checked["steps"]["total_steps"] == 12

    cfg = run_config.resolve(project).config
    assert step_summary(cfg, step_count.dataset_sizes(project), image_repeats(project)).startswith("12 steps: ")

    trained = cli("train", "toy", "--json", root=root, timeout=600)
    assert trained.returncode == 0, trained.stderr
    summary = json.loads(trained.stdout)
    events = read_all(RunFiles(Path(summary["dir"])).events)
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == list(range(1, 13))
    assert (summary["state"], summary["step"], summary["total_steps"]) == ("completed", 12, 12)


def test_sizes_are_cropped_to_the_models_granularity_as_the_trainer_crops_them():
    # SD 1.x crops to 64 px: at a small resolution prep's finer buckets 96x160 and 112x144 both train
    # as 64x128, one bucket; an image under 64 px is skipped by the trainer, so it is not counted.
    sizes = {"a.png": (96, 160), "b.png": (112, 144), "tiny.png": (48, 200)}
    sd15 = step_count.count(TrainConfig(base_model="synthetic:sd15", batch_size=2, max_train_epochs=1), sizes)
    assert (sd15.images, sd15.buckets, sd15.batches_per_epoch) == (2, 1, 1)
    tiny = step_count.count(TrainConfig(base_model="synthetic:tiny", batch_size=2, max_train_epochs=1), sizes)
    assert (tiny.images, tiny.buckets, tiny.batches_per_epoch) == (3, 3, 3)


def test_the_granularity_comes_from_the_models_configs_without_weights(tmp_path):
    from loradeck.trainer.config import model_family

    folder = tmp_path / "model"
    for part, blocks in (("vae", [128, 256, 512, 512]), ("unet", [320, 640, 1280])):
        (folder / part).mkdir(parents=True)
        (folder / part / "config.json").write_text(json.dumps({"block_out_channels": blocks}))
    assert model_family.pixel_granularity(str(folder)) == 8 * 4  # SDXL's shape: 32 px
    assert model_family.pixel_granularity("synthetic:sd15") == 64
    assert model_family.pixel_granularity("synthetic:tiny") == 4
    assert model_family.pixel_granularity("someone/not-in-the-cache") is None  # counted as prep made them
    assert model_family.granularity(4, 4) == 64


def test_the_trainers_scan_crops_with_the_same_rule(tmp_path):
    from loradeck.trainer.train.data import scan

    for name, size in {"a.png": (96, 160), "b.png": (112, 144), "tiny.png": (48, 200)}.items():
        Image.new("RGB", size).save(tmp_path / name)
    items = scan(tmp_path, granularity=64)
    assert {item.path.name: item.size for item in items} == {"a.png": (64, 128), "b.png": (64, 128)}
