"""Undo of batch caption edits: every batch op is journalled, undo restores it exactly, several levels
deep, keeps (and reports) captions edited by hand since, and the journal stays bounded and atomic."""

from __future__ import annotations

import json

import pytest

from loradeck.trainer.atomic import TMP_PREFIX
from loradeck.trainer.dataset import caption_journal, caption_ops, caption_store
from loradeck.trainer.errors import LoradeckError
from tests.dataset.conftest import noise


@pytest.fixture
def captioned(small_project):
    """a.png 'cat, sitting', b.png 'sks cat, red', c.png (no caption), e.png 'a dog, cat'."""
    d = small_project.dataset
    for i, name in enumerate("abce"):
        noise(16, 16, seed=i).save(d / f"{name}.png")
    (d / "a.txt").write_text("cat, sitting\n")
    (d / "b.txt").write_text("sks cat, red\n")
    (d / "e.txt").write_text("a dog, cat\n")
    return small_project


def _files(project) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(project.dataset.glob("*.txt"))}


def test_undo_restores_a_batch_find_replace_exactly(captioned):
    before = _files(captioned)
    result = caption_ops.replace_text(captioned, "cat", "kitten")
    assert len(result.changes) == 3 and _files(captioned) != before
    undone = caption_journal.undo_last(captioned)
    assert sorted(undone.restored) == ["a.txt", "b.txt", "e.txt"] and undone.conflicts == []
    assert _files(captioned) == before
    assert "replace 'cat'" in undone.label


def test_a_dry_run_records_nothing(captioned):
    caption_ops.replace_text(captioned, "cat", "kitten", dry_run=True)
    assert caption_journal.list_batches(captioned) == []
    with pytest.raises(LoradeckError, match="nothing to undo"):
        caption_journal.undo_last(captioned)


def test_undo_walks_back_several_batches_newest_first(captioned):
    original = _files(captioned)
    caption_ops.set_trigger(captioned, "zxq", include_uncaptioned=True)   # also creates c.txt
    after_trigger = _files(captioned)
    caption_ops.replace_text(captioned, "dog", "wolf")
    caption_ops.remove_trigger(captioned, "sks cat")
    labels = [b.label for b in caption_journal.list_batches(captioned)]
    assert labels[0].startswith("remove trigger") and labels[1].startswith("replace") and \
        labels[2].startswith("trigger")
    caption_journal.undo_last(captioned)
    caption_journal.undo_last(captioned)
    assert _files(captioned) == after_trigger
    last = caption_journal.undo_last(captioned)
    assert last.remaining == 0
    assert _files(captioned) == original and not (captioned.dataset / "c.txt").exists()  # created → removed


def test_a_caption_edited_by_hand_since_is_kept_and_reported(captioned):
    caption_ops.replace_text(captioned, "cat", "kitten")
    caption_store.write_caption(captioned.dataset / "a.png", "my own words")
    undone = caption_journal.undo_last(captioned)
    assert undone.conflicts == ["a.txt"] and sorted(undone.restored) == ["b.txt", "e.txt"]
    assert (captioned.dataset / "a.txt").read_text() == "my own words\n"
    assert (captioned.dataset / "b.txt").read_text() == "sks cat, red\n"


def test_metadata_import_is_undoable(captioned, tmp_path):
    meta = tmp_path / "metadata.jsonl"
    meta.write_text(json.dumps({"file_name": "c.png", "text": "new one"}) + "\n"
                    + json.dumps({"file_name": "a.png", "text": "replaced"}) + "\n")
    before = _files(captioned)
    caption_ops.import_metadata(captioned, meta, overwrite=True)
    assert (captioned.dataset / "c.txt").exists()
    caption_journal.undo_last(captioned)
    assert _files(captioned) == before


def test_journal_keeps_at_most_max_depth_batches(captioned, monkeypatch):
    monkeypatch.setattr(caption_journal, "MAX_DEPTH", 3)
    for i in range(5):
        caption_journal.record_batch(captioned, f"batch {i}", [("a.txt", f"v{i}", f"v{i + 1}")])
    batches = caption_journal.list_batches(captioned)
    assert [b.label for b in batches] == ["batch 4", "batch 3", "batch 2"]
    files = sorted(p.name for p in caption_journal.journal_dir(captioned).iterdir())
    assert len(files) == 3 and not any(n.startswith(TMP_PREFIX) for n in files)


def test_context_manager_records_what_was_written_even_when_the_run_fails(captioned):
    image = captioned.dataset / "c.png"
    with pytest.raises(RuntimeError):
        with caption_journal.batch(captioned, "tagger run") as journal:
            caption_store.write_caption(image, "tagged")
            journal.add("c.txt", None, "tagged")
            raise RuntimeError("model crashed half way")
    assert [b.label for b in caption_journal.list_batches(captioned)] == ["tagger run"]
    caption_journal.undo_last(captioned)
    assert not (captioned.dataset / "c.txt").exists()


def test_a_damaged_journal_entry_is_skipped_and_older_batches_still_undo(captioned):
    before = _files(captioned)
    caption_ops.replace_text(captioned, "red", "blue")
    (caption_journal.journal_dir(captioned) / "000099.json").write_text("{not json")
    undone = caption_journal.undo_last(captioned)
    assert undone.restored == ["b.txt"] and _files(captioned) == before


def test_cli_undo_list_and_undo(cli, root, captioned):
    replaced = cli("captions", "replace", "tiny", "cat", "kitten", root=root, check=True)
    assert replaced.stdout.rstrip().endswith("undo: loradeck captions undo tiny")
    listed = json.loads(cli("captions", "undo", "tiny", "--list", "--json", root=root, check=True).stdout)
    assert [b["files"] for b in listed["batches"]] == [3]
    caption_store.write_caption(captioned.dataset / "e.png", "by hand")
    proc = cli("captions", "undo", "tiny", root=root, check=True)
    assert "restored 2 caption(s), 1 edited since and kept" in proc.stdout and "kept e.txt" in proc.stdout
    assert (captioned.dataset / "a.txt").read_text() == "cat, sitting\n"
    again = cli("captions", "undo", "tiny", root=root)
    assert again.returncode == 1 and again.stderr.startswith("error: nothing to undo")
