"""The dataset: buckets by prepared size, captions (trigger, shuffle, keep tokens, dropout), batch order."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from engine_helpers import write_images

from loradeck.trainer.train import data as train_data


def test_images_are_grouped_by_their_prepared_size(tmp_path):
    write_images(tmp_path / "dataset", 6, size=[(64, 64), (96, 64), (64, 96)])
    (tmp_path / "dataset" / "broken.png").write_bytes(b"not an image")
    items = train_data.scan(tmp_path / "dataset", trigger_word="zxq")
    assert len(items) == 6
    assert Counter(i.bucket for i in items) == {(64, 64): 2, (96, 64): 2, (64, 96): 2}
    assert train_data.unreadable_count(tmp_path / "dataset", items) == 1
    assert all(i.caption.startswith("zxq, ") for i in items)
    plan = train_data.BatchPlan(items, batch_size=2, repeats=1, seed=1)
    for index in range(plan.batches_per_epoch * 2):
        _, batch = plan.micro_batch(index)
        assert len({i.bucket for i in batch}) == 1  # a batch never mixes sizes


def test_sizes_off_the_model_grid_are_cropped_to_it(tmp_path):
    write_images(tmp_path / "dataset", 1, size=(70, 67))
    [item] = train_data.scan(tmp_path / "dataset", granularity=8)
    assert item.size == (64, 64)
    assert tuple(train_data.load_pixels(item).shape) == (3, 64, 64)


def test_empty_dataset_is_a_data_error(tmp_path):
    (tmp_path / "dataset").mkdir()
    with pytest.raises(train_data.DataError, match="no trainable images"):
        train_data.scan(tmp_path / "dataset")


def test_trigger_is_not_added_twice():
    assert train_data.add_trigger("zxq, red", "zxq") == "zxq, red"
    assert train_data.add_trigger("red", "zxq") == "zxq, red"
    assert train_data.add_trigger("", "zxq") == "zxq"


def test_shuffle_keeps_the_first_tokens_and_dropout_empties():
    caption = "zxq, a, b, c, d, e"
    rng = random.Random(0)
    seen = set()
    for _ in range(30):
        out = train_data.process_caption(caption, rng, shuffle=True, keep_tokens=1, dropout_rate=0.0)
        assert out.startswith("zxq, ") and sorted(out.split(", ")) == sorted(caption.split(", "))
        seen.add(out)
    assert len(seen) > 5
    dropped = [train_data.process_caption(caption, rng, shuffle=False, keep_tokens=0, dropout_rate=0.5)
               for _ in range(200)]
    assert 50 < dropped.count("") < 150 and set(dropped) == {"", caption}


def test_each_epoch_sees_every_image_repeats_times_in_a_seeded_order(tmp_path):
    write_images(tmp_path / "dataset", 5)
    items = train_data.scan(tmp_path / "dataset")
    plan = train_data.BatchPlan(items, batch_size=2, repeats=3, seed=7)
    assert plan.batches_per_epoch == 8  # 15 images -> 7 full batches + 1 of one
    epoch0 = [i.path.name for k in range(8) for i in plan.micro_batch(k)[1]]
    assert Counter(epoch0) == {i.path.name: 3 for i in items}
    again = train_data.BatchPlan(items, batch_size=2, repeats=3, seed=7)
    assert [i.path.name for k in range(8, 16) for i in again.micro_batch(k)[1]] == \
        [i.path.name for k in range(8, 16) for i in plan.micro_batch(k)[1]]
    assert plan.micro_batch(8)[0] == 1


def test_kohya_folder_repeats_multiply_per_image_on_top_of_the_run_repeats(tmp_path):
    write_images(tmp_path / "dataset", 3)
    items = train_data.scan(tmp_path / "dataset")
    stems = sorted(i.path.stem for i in items)
    weighted = train_data.scan(tmp_path / "dataset", image_repeats={stems[0]: 4, "not-in-dataset": 9})
    assert {i.path.stem: i.repeats for i in weighted} == {stems[0]: 4, stems[1]: 1, stems[2]: 1}
    plan = train_data.BatchPlan(weighted, batch_size=1, repeats=2, seed=3)
    assert plan.batches_per_epoch == (4 + 1 + 1) * 2
    epoch0 = Counter(i.path.stem for k in range(plan.batches_per_epoch) for i in plan.micro_batch(k)[1])
    assert epoch0 == {stems[0]: 8, stems[1]: 2, stems[2]: 2}


def test_tag_frequency_counts_caption_tags(tmp_path):
    write_images(tmp_path / "dataset", 3, captions=["a, b", "a, c"])
    freq = train_data.tag_frequency(train_data.scan(tmp_path / "dataset"), "1_proj")
    assert freq == {"1_proj": {"a": 3, "b": 2, "c": 1}}
