"""caption_project with the tiny random BLIP: batching, skip/overwrite, affixes, broken images, safety."""

from __future__ import annotations

import pytest

from loradeck.trainer.captions.blip_captioning import CaptionOptions, caption_project
from loradeck.trainer.dataset import caption_store
from loradeck.trainer.dataset.project import dataset_images

from .helpers import TINY

SHORT = dict(model=TINY, max_length=12, min_length=3)


def captions(project, ext=".txt") -> dict[str, str | None]:
    return {p.name: caption_store.read_caption(p, ext) for p in dataset_images(project)}


@pytest.mark.parametrize("beams", [1, 3])
def test_batched_captions_equal_one_by_one(make_project, tiny_captioner, beams):
    project = make_project(7)
    caption_project(project, CaptionOptions(**SHORT, beams=beams, batch_size=1), captioner=tiny_captioner)
    one_by_one = captions(project)
    report = caption_project(project, CaptionOptions(**SHORT, beams=beams, batch_size=4, overwrite=True),
                             captioner=tiny_captioner)
    assert report.batch_size == 4 and len(report.captioned) == 7
    assert captions(project) == one_by_one
    assert all(text and len(text.split()) >= 3 for text in one_by_one.values())  # real words came out


def test_existing_captions_are_skipped_and_kept(make_project, tiny_captioner):
    project = make_project(4)
    images = dataset_images(project)
    caption_store.write_caption(images[1], "my careful caption")
    report = caption_project(project, CaptionOptions(**SHORT), captioner=tiny_captioner)
    assert report.skipped == [images[1].name]
    assert sorted(report.captioned) == sorted(p.name for p in images if p != images[1])
    assert caption_store.read_caption(images[1]) == "my careful caption"


def test_overwrite_recaptions_images_that_have_a_caption(make_project, tiny_captioner):
    project = make_project(3)
    image = dataset_images(project)[0]
    caption_store.write_caption(image, "old words")
    report = caption_project(project, CaptionOptions(**SHORT, overwrite=True), captioner=tiny_captioner)
    assert len(report.captioned) == 3 and not report.skipped
    assert caption_store.read_caption(image) != "old words"


def test_second_run_captions_nothing_and_does_not_load_a_model(make_project, tiny_captioner):
    project = make_project(3)
    caption_project(project, CaptionOptions(**SHORT), captioner=tiny_captioner)
    before = captions(project)
    # A model name that cannot load proves no model is loaded when nothing needs captioning.
    report = caption_project(project, CaptionOptions(model="synthetic:nope"))
    assert report.captioned == [] and len(report.skipped) == 3
    assert captions(project) == before


def test_prefix_and_suffix_are_applied_once_across_reruns(make_project, tiny_captioner):
    project = make_project(3)
    opts = dict(**SHORT, prefix="ohwx", suffix="film photo", batch_size=2)
    caption_project(project, CaptionOptions(**opts), captioner=tiny_captioner)
    caption_project(project, CaptionOptions(**opts, overwrite=True), captioner=tiny_captioner)
    for text in captions(project).values():
        assert text.startswith("ohwx, ") and text.endswith(", film photo")
        assert text.count("ohwx") == 1 and text.count("film photo") == 1


def test_project_trigger_word_is_the_default_prefix(make_project, tiny_captioner):
    project = make_project(2, trigger_word="zkw woman")
    report = caption_project(project, CaptionOptions(**SHORT), captioner=tiny_captioner)
    assert report.prefix == "zkw woman"
    assert all(t.startswith("zkw woman, ") for t in captions(project).values())


def test_trigger_word_can_be_left_out(make_project, tiny_captioner):
    project = make_project(2, trigger_word="zkw")
    caption_project(project, CaptionOptions(**SHORT, use_trigger_word=False), captioner=tiny_captioner)
    assert not any(t.startswith("zkw") for t in captions(project).values())
    caption_project(project, CaptionOptions(**SHORT, prefix="", overwrite=True), captioner=tiny_captioner)
    assert not any(t.startswith("zkw") for t in captions(project).values())


def test_caption_extension_comes_from_the_project(make_project, tiny_captioner):
    project = make_project(2, caption_extension=".caption")
    caption_project(project, CaptionOptions(**SHORT), captioner=tiny_captioner)
    assert all(captions(project, ".caption").values())
    assert not list(project.dataset.glob("*.txt"))


def test_broken_images_are_skipped_with_a_reason_and_the_rest_captioned(make_project, tiny_captioner):
    project = make_project(4)
    good = dataset_images(project)
    data = good[1].read_bytes()
    (project.dataset / "truncated.png").write_bytes(data[: len(data) // 3])
    (project.dataset / "empty.jpg").write_bytes(b"")
    (project.dataset / "notes.webp").write_text("not an image at all")
    events = []
    report = caption_project(project, CaptionOptions(**SHORT, batch_size=3), captioner=tiny_captioner,
                             on_event=lambda t, **f: events.append((t, f)))
    assert set(report.failed) == {"truncated.png", "empty.jpg", "notes.webp"}
    assert all(report.failed.values())
    assert sorted(report.captioned) == sorted(p.name for p in good)
    failed_events = {f["item"]: f["reason"] for t, f in events if t == "item_failed"}
    assert failed_events == report.failed
    for name in report.failed:  # nothing written for them
        assert caption_store.read_caption(project.dataset / name) is None
    assert events[-1][0] == "task_finished" and events[-1][1]["status"] == "completed"


def test_a_caption_written_meanwhile_is_not_clobbered(make_project, tiny_captioner):
    project = make_project(4)
    last = dataset_images(project)[-1]

    def user_edits_during_the_run(type_, **fields):
        if type_ == "progress" and fields["done"] == 1:
            caption_store.write_caption(last, "typed by the user while captioning ran")

    report = caption_project(project, CaptionOptions(**SHORT, batch_size=1), captioner=tiny_captioner,
                             on_event=user_edits_during_the_run)
    assert caption_store.read_caption(last) == "typed by the user while captioning ran"
    assert last.name in report.failed and len(report.captioned) == 3


def test_should_stop_ends_after_the_current_batch_with_its_captions_saved(make_project, tiny_captioner):
    project = make_project(6)
    progress = []
    report = caption_project(project, CaptionOptions(**SHORT, batch_size=2), captioner=tiny_captioner,
                             on_event=lambda t, **f: progress.append(f) if t == "progress" else None,
                             should_stop=lambda: len(progress) >= 1)
    assert report.stopped and report.status == "stopped"
    assert len(report.captioned) == 2
    written = [name for name, text in captions(project).items() if text]
    assert sorted(written) == sorted(report.captioned)
    rest = caption_project(project, CaptionOptions(**SHORT, batch_size=2), captioner=tiny_captioner)
    assert len(rest.captioned) == 4 and sorted(rest.skipped) == sorted(report.captioned)


def test_conditional_prompt_is_removed_from_the_caption(make_project, tiny_captioner):
    import torch

    project = make_project(1)
    image = dataset_images(project)[0]
    prompt = "a picture of"
    caption_project(project, CaptionOptions(**SHORT, beams=1, prompt=prompt), captioner=tiny_captioner)
    # What the model returns, prompt included, decoded straight:
    from PIL import Image

    proc, tok = tiny_captioner.processor, tiny_captioner.tokenizer
    pixels = proc.image_processor(images=Image.open(image).convert("RGB"), return_tensors="pt")["pixel_values"]
    enc = tok([prompt], return_tensors="pt")
    with torch.inference_mode():
        out = tiny_captioner.model.generate(pixel_values=pixels, input_ids=enc["input_ids"],
                                            attention_mask=enc["attention_mask"], num_beams=1,
                                            min_new_tokens=3, max_new_tokens=12)
    full = tok.decode(out[0], skip_special_tokens=True)
    assert full.startswith(prompt + " ")
    assert caption_store.read_caption(image) == full[len(prompt):].strip()


def test_sampling_with_a_seed_is_repeatable(make_project, tiny_captioner):
    project = make_project(3)
    opts = dict(**SHORT, sample=True, top_p=0.95, temperature=1.5, overwrite=True, batch_size=3)
    caption_project(project, CaptionOptions(**opts, seed=7), captioner=tiny_captioner)
    first = captions(project)
    caption_project(project, CaptionOptions(**opts, seed=7), captioner=tiny_captioner)
    assert captions(project) == first
    caption_project(project, CaptionOptions(**opts, seed=8), captioner=tiny_captioner)
    assert captions(project) != first


def test_out_of_memory_halves_the_batch_and_goes_on(make_project, tiny_captioner, monkeypatch):
    import torch

    import loradeck.trainer.captions.blip_captioning as engine

    real = engine._generate

    def small_gpu(captioner, pixels, options):
        if pixels.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(captioner, pixels, options)

    monkeypatch.setattr(engine, "_generate", small_gpu)
    project = make_project(7)
    events = []
    report = caption_project(project, CaptionOptions(**SHORT, batch_size=8), captioner=tiny_captioner,
                             on_event=lambda t, **f: events.append((t, f)))
    assert len(report.captioned) == 7 and report.batch_size == 2
    assert any(t == "warning" and "batch size lowered to 2" in f["message"] for t, f in events)


def test_missing_model_fails_with_a_finished_event(make_project):
    from loradeck.trainer.errors import ModelError

    project = make_project(1)
    events = []
    with pytest.raises(ModelError):
        caption_project(project, CaptionOptions(model="synthetic:nope"), on_event=lambda t, **f: events.append((t, f)))
    assert events[-1][0] == "task_finished" and events[-1][1]["status"] == "failed"
    assert "synthetic:nope" in events[-1][1]["message"]


def test_out_of_memory_on_a_single_image_is_a_clear_error_keeping_earlier_captions(make_project, tiny_captioner,
                                                                                     monkeypatch):
    import torch

    import loradeck.trainer.captions.blip_captioning as engine
    from loradeck.trainer.errors import LoradeckError

    real, calls = engine._generate, []

    def fails_after_first_batch(captioner, pixels, options):
        calls.append(pixels.shape[0])
        if len(calls) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(captioner, pixels, options)

    monkeypatch.setattr(engine, "_generate", fails_after_first_batch)
    project = make_project(4)
    with pytest.raises(LoradeckError, match="out of memory captioning"):
        caption_project(project, CaptionOptions(**SHORT, batch_size=2), captioner=tiny_captioner)
    assert calls == [2, 2, 1]
    assert sum(1 for text in captions(project).values() if text) == 2


def test_an_image_with_too_many_pixels_is_skipped_with_a_reason(make_project, tiny_captioner, monkeypatch):
    from PIL import Image

    project = make_project(1)
    Image.new("RGB", (300, 300), "white").save(project.dataset / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)  # 300x300 is then a decompression bomb
    report = caption_project(project, CaptionOptions(**SHORT), captioner=tiny_captioner)
    assert "too many pixels" in report.failed["huge.png"]
    assert len(report.captioned) == 1


def test_an_overwrite_run_is_one_undoable_batch(make_project, tiny_captioner):
    from loradeck.trainer.dataset import caption_journal

    project = make_project(3)
    first, second, third = dataset_images(project)
    caption_store.write_caption(first, "old words")
    caption_project(project, CaptionOptions(**SHORT, overwrite=True), captioner=tiny_captioner)
    assert caption_store.read_caption(first) != "old words"
    [batch] = caption_journal.list_batches(project)
    assert "overwrite" in batch.label and len(batch.changes) == 3
    undone = caption_journal.undo_last(project)
    assert sorted(undone.restored) == sorted(caption_store.caption_path(p).name for p in (first, second, third))
    assert captions(project) == {first.name: "old words", second.name: None, third.name: None}
