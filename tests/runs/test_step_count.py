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
    count = step_count.count(TrainConfig(batch_size=2, repeats=3, max_train_epochs=2), SIZES)
    assert (count.images, count.buckets, count.batches_per_epoch, count.steps_per_epoch, count.total_steps) == \
        (9, 3, 15, 15, 30)
    # gradient accumulation spans the epoch boundary: ceil(15 x 2 / 4) = 8 steps, 4 an epoch (rounded up)
    count = step_count.count(TrainConfig(batch_size=2, repeats=3, max_train_epochs=2, gradient_accumulation_steps=4),
                             SIZES)
    assert (count.steps_per_epoch, count.total_steps) == (4, 8)
    # kohya folder repeats: a0 counts 4 times -> bucket 64x64 holds 8 -> 4 + 2 + 1 = 7 batches
    count = step_count.count(TrainConfig(batch_size=2, repeats=1, max_train_epochs=1), SIZES, {"a0": 4})
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
