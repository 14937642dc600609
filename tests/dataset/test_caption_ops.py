"""Caption operations: status, trigger word, find/replace with preview, tags, metadata.jsonl, atomicity."""

from __future__ import annotations

import errno
import json
import os

import pytest

from loradeck.trainer.atomic import TMP_PREFIX
from loradeck.trainer.dataset import caption_ops, caption_store
from loradeck.trainer.errors import LoradeckError
from tests.dataset.conftest import noise


@pytest.fixture
def captioned(small_project):
    """dataset/ with a.png 'cat, sitting', b.png 'sks cat, red', c.png (no caption),
    d.png with only a .caption file, e.png 'a dog, cat'."""
    d = small_project.dataset
    for i, name in enumerate("abcde"):
        noise(16, 16, seed=i).save(d / f"{name}.png")
    (d / "a.txt").write_text("cat, sitting\n")
    (d / "b.txt").write_text("sks cat, red\n")
    (d / "d.caption").write_text("kohya caption\n")
    (d / "e.txt").write_text("a dog, cat\n")
    return small_project


def _captions(project) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(project.dataset.glob("*.txt"))}


def test_list_shows_captioned_missing_and_ignored_extension(captioned):
    rows = {r.image: r for r in caption_ops.list_captions(captioned)}
    assert rows["a.png"].status == "captioned" and rows["a.png"].text == "cat, sitting"
    assert rows["c.png"].status == "missing"
    assert rows["d.png"].status == "ignored_extension" and rows["d.png"].ignored == ["d.caption"]
    assert [r.image for r in caption_ops.uncaptioned(captioned)] == ["c.png", "d.png"]


def test_trigger_word_is_prepended_or_moved_first_and_is_idempotent(captioned):
    first = caption_ops.set_trigger(captioned, "sks cat")
    assert {c.image: c.after for c in first.changes} == {"a.png": "sks cat, cat, sitting",
                                                         "e.png": "sks cat, a dog, cat"}
    assert first.unchanged == 1  # b.png already starts with it
    snapshot = _captions(captioned)
    second = caption_ops.set_trigger(captioned, "sks cat")
    assert second.changes == [] and _captions(captioned) == snapshot
    assert caption_ops.with_trigger("red, sks cat, blue", "sks cat") == "sks cat, red, blue"


def test_trigger_can_caption_uncaptioned_images(captioned):
    result = caption_ops.set_trigger(captioned, "sks", include_uncaptioned=True)
    assert (captioned.dataset / "c.txt").read_text() == "sks\n"
    assert "c.png" in {c.image for c in result.changes}


def test_replace_dry_run_previews_every_change_and_writes_nothing(captioned):
    before = _captions(captioned)
    preview = caption_ops.replace_text(captioned, "cat", "kitten", dry_run=True)
    assert not preview.applied
    assert {(c.image, c.before, c.after) for c in preview.changes} == {
        ("a.png", "cat, sitting", "kitten, sitting"),
        ("b.png", "sks cat, red", "sks kitten, red"),
        ("e.png", "a dog, cat", "a dog, kitten")}
    assert _captions(captioned) == before
    applied = caption_ops.replace_text(captioned, "cat", "kitten")
    assert applied.applied and (captioned.dataset / "a.txt").read_text() == "kitten, sitting\n"


def test_regex_replace_with_groups_and_tag_removal_tidies_commas(captioned):
    caption_ops.replace_text(captioned, r"^(\w+) cat", r"\1 feline", regex=True)
    assert (captioned.dataset / "b.txt").read_text() == "sks feline, red\n"
    caption_ops.replace_text(captioned, "sitting", "")
    assert (captioned.dataset / "a.txt").read_text() == "cat\n"
    result = caption_ops.replace_text(captioned, "CAT", "", ignore_case=True)
    assert ("a.png", "the replacement would leave the caption empty") in result.skipped
    assert (captioned.dataset / "a.txt").read_text() == "cat\n"  # never deleted


def test_plain_replace_takes_backslashes_literally_and_bad_regex_is_one_line_error(captioned):
    caption_ops.replace_text(captioned, "sitting", r"a\1b")
    assert (captioned.dataset / "a.txt").read_text() == "cat, a\\1b\n"
    with pytest.raises(LoradeckError, match="invalid regular expression"):
        caption_ops.replace_text(captioned, "(unclosed", "x", regex=True)


def test_failed_write_leaves_every_caption_intact_and_no_temporaries(captioned, monkeypatch):
    before = _captions(captioned)

    def disk_full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError):
        caption_ops.replace_text(captioned, "cat", "kitten")
    monkeypatch.undo()
    assert _captions(captioned) == before
    assert not list(captioned.dataset.glob(TMP_PREFIX + "*"))


def test_a_caption_edited_meanwhile_is_not_clobbered(captioned, monkeypatch):
    real_read = caption_store.read_caption

    def read_then_user_edits(image, ext=".txt"):
        text = real_read(image, ext)
        if image.name == "a.png":
            (image.with_name("a.txt")).write_text("the user's new text, longer than before\n")
        return text

    monkeypatch.setattr(caption_store, "read_caption", read_then_user_edits)
    result = caption_ops.replace_text(captioned, "cat", "kitten")
    assert [image for image, _ in result.skipped] == ["a.png"]
    assert (captioned.dataset / "a.txt").read_text() == "the user's new text, longer than before\n"


def test_tag_frequency_counts_captions_per_tag(captioned):
    table = dict(caption_ops.tag_frequency(captioned))
    assert table == {"cat": 2, "sitting": 1, "sks cat": 1, "red": 1, "a dog": 1}
    assert caption_ops.tag_frequency(captioned)[0] == ("cat", 2)


def test_metadata_jsonl_round_trip(captioned, tmp_path):
    out = caption_ops.export_metadata(captioned)
    rows = [json.loads(line) for line in (captioned.dataset / "metadata.jsonl").read_text().splitlines()]
    assert out["rows"] == 5 and out["missing"] == 2
    assert {"file_name": "a.png", "text": "cat, sitting"} in rows
    # Import into fresh captions: matched by name, by stem, unmatched and bad lines reported.
    for p in captioned.dataset.glob("*.txt"):
        p.unlink()
    meta = tmp_path / "metadata.jsonl"
    meta.write_text("\n".join([
        json.dumps({"file_name": "train/a.png", "text": "one"}),
        json.dumps({"file_name": "b.jpg", "text": "two"}),
        json.dumps({"file_name": "zzz.png", "text": "three"}),
        "{not json",
        json.dumps({"file_name": "c.png", "caption": "four"}),
    ]) + "\n", encoding="utf-8")
    preview = caption_ops.import_metadata(captioned, meta, dry_run=True)
    assert not list(captioned.dataset.glob("*.txt"))
    assert {c.image for c in preview.changes} == {"a.png", "b.png", "c.png"}
    result = caption_ops.import_metadata(captioned, meta)
    assert result.unmatched == ["zzz.png"] and result.bad_lines[0][0] == 4
    assert (captioned.dataset / "b.txt").read_text() == "two\n"


def test_metadata_import_keeps_differing_captions_unless_overwrite(captioned, tmp_path):
    meta = tmp_path / "m.jsonl"
    meta.write_text(json.dumps({"file_name": "a.png", "text": "new"}) + "\n")
    kept = caption_ops.import_metadata(captioned, meta)
    assert kept.skipped and (captioned.dataset / "a.txt").read_text() == "cat, sitting\n"
    caption_ops.import_metadata(captioned, meta, overwrite=True)
    assert (captioned.dataset / "a.txt").read_text() == "new\n"


def test_set_caption_refuses_unknown_images(captioned):
    caption_ops.set_caption(captioned, "c.png", "hello")
    assert (captioned.dataset / "c.txt").read_text() == "hello\n"
    with pytest.raises(LoradeckError, match="no image"):
        caption_ops.set_caption(captioned, "../../etc/passwd", "x")
