"""No-clobber placing (loradeck.trainer.atomic): a staged file takes a name only while it is free."""

from __future__ import annotations

import errno
import os
import threading

import pytest

from loradeck.trainer.atomic import TMP_PREFIX, StagedFile, link_no_clobber, sweep_stale_temporaries


def _staged(folder, data: bytes) -> StagedFile:
    staged = StagedFile(folder)
    staged.write(lambda fh: fh.write(data), 0o644)
    return staged


def test_a_free_name_is_taken_and_the_temporary_is_gone(tmp_path):
    staged = _staged(tmp_path, b"new")
    assert link_no_clobber(staged.path, tmp_path / "a.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == b"new"
    assert not staged.path.exists()


def test_an_existing_name_is_never_replaced(tmp_path):
    (tmp_path / "a.safetensors").write_bytes(b"theirs")
    staged = _staged(tmp_path, b"ours")
    assert not link_no_clobber(staged.path, tmp_path / "a.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == b"theirs"
    staged.discard()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.safetensors"]


def test_without_hard_links_a_taken_name_is_still_refused(tmp_path, monkeypatch):
    def no_links(*_a, **_k):
        raise OSError(errno.EPERM, "hard links not supported")

    monkeypatch.setattr(os, "link", no_links)
    (tmp_path / "taken").write_bytes(b"theirs")
    staged = _staged(tmp_path, b"ours")
    assert not link_no_clobber(staged.path, tmp_path / "taken")
    assert (tmp_path / "taken").read_bytes() == b"theirs"
    assert link_no_clobber(staged.path, tmp_path / "free")
    assert (tmp_path / "free").read_bytes() == b"ours" and not staged.path.exists()


def test_of_writers_racing_for_one_name_exactly_one_wins(tmp_path):
    staged = [_staged(tmp_path, f"writer {i}".encode()) for i in range(8)]
    start = threading.Barrier(len(staged))
    won = []

    def race(s: StagedFile) -> None:
        start.wait()
        if link_no_clobber(s.path, tmp_path / "name"):
            s.placed = True
            won.append(s)

    threads = [threading.Thread(target=race, args=(s,)) for s in staged]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert (tmp_path / "name").read_bytes() == f"writer {staged.index(won[0])}".encode()
    for s in staged:
        s.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["name"]


def test_a_staged_file_is_hidden_and_a_fresh_one_survives_the_sweep(tmp_path):
    staged = _staged(tmp_path, b"in progress")
    assert staged.path.name.startswith(TMP_PREFIX)
    assert sweep_stale_temporaries(tmp_path) == 0 and staged.path.exists()
    assert sweep_stale_temporaries(tmp_path, older_than=-1) == 1 and not staged.path.exists()


def test_other_link_errors_are_raised_not_guessed_around(tmp_path, monkeypatch):
    def failing(*_a, **_k):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "link", failing)
    staged = _staged(tmp_path, b"ours")
    with pytest.raises(OSError):
        link_no_clobber(staged.path, tmp_path / "name")
    assert not (tmp_path / "name").exists()
