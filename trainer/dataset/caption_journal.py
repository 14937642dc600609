"""Undo for batch caption edits: a journal of what each batch changed, and `undo_last` to put it back.

Every command that rewrites many captions at once (find/replace, trigger add/remove, a BLIP or tagger
run, a metadata import) records one *batch*: for each caption file it changed, the text before (None
when the file did not exist) and a hash of the text it left. `undo_last` restores the newest batch's
files and drops it from the journal, so repeated undos walk back several batches (MAX_DEPTH at most).
A caption that no longer holds the text the batch left (edited by hand since, or by a later tool run)
is never overwritten: it is reported as a conflict, and the rest of the batch is restored.

How to record a batch (any engine code that writes captions through loradeck.trainer.dataset.caption_store):

    from loradeck.trainer.dataset import caption_journal

    # all changes known at the end (caption_ops.Change objects, or (caption file name, before, after)):
    caption_journal.record_batch(project, "replace 'cat' -> 'dog'", result.changes)

    # or while writing, e.g. a long tagger run that may stop half way: recorded on leaving the block,
    # also when it raises, so whatever was written is undoable; nothing is recorded for no changes.
    with caption_journal.batch(project, "wd14 tags (overwrite)") as journal:
        ...
        caption_store.write_caption(image, text, ext)
        journal.add(image.stem + ext, before, text)     # before: the old text, or None if absent

`before` / `after` are caption texts as loradeck.trainer.dataset.caption_store reads and writes them (`after` may be
blank or None when the write removed the file). Nothing here imports torch or textual.

On disk: `<project>/.loradeck/caption-journal/<sequence>.json`, one JSON file per batch, each written
atomically (loradeck.trainer.atomic); the oldest files beyond MAX_DEPTH are deleted. An unreadable journal
file is skipped (and reported by `list_batches`), never fatal to an edit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.dataset import caption_store
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import LoradeckError

JOURNAL_DIR = "caption-journal"   # under the project's .loradeck/ (loradeck.trainer.dataset.project.STATE_DIR)
MAX_DEPTH = 20                    # batches kept; recording the 21st drops the oldest
_ENTRY_RE = re.compile(r"(\d{6,})\.json")


def journal_dir(project: Project) -> Path:
    return project.state / JOURNAL_DIR


def text_hash(text: str | None) -> str | None:
    """The hash recorded for a caption's text after a batch; None for no caption file (or a blank one,
    which caption_store never leaves on disk)."""
    text = caption_store.normalize(text or "")
    return hashlib.sha256(text.encode("utf-8")).hexdigest() if text else None


@dataclass
class Batch:
    """One recorded batch. `changes`: [{"file", "before", "after_sha256"}]."""

    seq: int
    label: str
    time: float
    changes: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"seq": self.seq, "label": self.label, "time": self.time, "files": len(self.changes)}


@dataclass
class UndoResult:
    """What `undo_last` did: `restored` / `conflicts` are caption file names (a conflict: the file was
    changed after the batch, so it was left as it is)."""

    label: str = ""
    seq: int = 0
    restored: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    remaining: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "seq": self.seq, "restored": list(self.restored),
                "conflicts": list(self.conflicts), "remaining": self.remaining}


def _as_triple(change: Any) -> tuple[str, str | None, str | None]:
    if isinstance(change, (tuple, list)):
        name, before, after = change
    else:  # caption_ops.Change and anything shaped like it
        name, before, after = change.caption_file, change.before, change.after
    return Path(str(name)).name, before, after


def _entries(project: Project) -> list[tuple[int, Path]]:
    folder = journal_dir(project)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        m = _ENTRY_RE.fullmatch(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found)


def record_batch(project: Project, label: str, changes: Iterable[Any]) -> Batch | None:
    """Journal one batch of caption changes (see the module docstring); None when there were none.

    A file listed twice keeps its first `before` and its last `after` (the batch's net effect).
    Raises LoradeckError when the journal cannot be written (the captions are written already).
    """
    merged: dict[str, dict[str, Any]] = {}
    for change in changes:
        name, before, after = _as_triple(change)
        entry = merged.setdefault(name, {"file": name, "before": before})
        entry["after_sha256"] = text_hash(after)
    if not merged:
        return None
    entries = _entries(project)
    seq = entries[-1][0] + 1 if entries else 1
    batch = Batch(seq, " ".join(str(label).split()) or "batch edit", time.time(), list(merged.values()))
    folder = journal_dir(project)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / f"{seq:06d}.json", json.dumps(
            {"seq": seq, "label": batch.label, "time": batch.time, "changes": batch.changes},
            ensure_ascii=False))
        for _old_seq, path in (entries + [(seq, None)])[:-MAX_DEPTH]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    except OSError as e:
        raise LoradeckError(f"captions were changed, but the undo journal could not be written: "
                            f"{e.strerror or e}", hint=f"check free space and permissions of {folder}") from None
    return batch


class _Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, str | None, str | None]] = []

    def add(self, caption_file: str | Path, before: str | None, after: str | None) -> None:
        """One caption file this batch wrote: its name (or path), old text (None: absent), new text."""
        self.changes.append((Path(caption_file).name, before, after))


@contextlib.contextmanager
def batch(project: Project, label: str) -> Iterator[_Recorder]:
    """Collect changes with `.add(file, before, after)`; they are journalled as one batch on leaving
    the block, also when it raises (what was written must stay undoable)."""
    recorder = _Recorder()
    try:
        yield recorder
    except BaseException:
        with contextlib.suppress(LoradeckError):  # the error in flight is the one to report
            record_batch(project, label, recorder.changes)
        raise
    record_batch(project, label, recorder.changes)


def _read(path: Path, seq: int) -> Batch:
    data = json.loads(path.read_text(encoding="utf-8"))
    changes = data["changes"]
    if not isinstance(changes, list) or not all(isinstance(c, dict) and isinstance(c.get("file"), str)
                                                for c in changes):
        raise ValueError("no list of changes")
    return Batch(seq, str(data.get("label", "")), float(data.get("time", 0.0)), changes)


def list_batches(project: Project) -> list[Batch]:
    """The recorded batches, newest first (unreadable journal files are left out)."""
    out = []
    for seq, path in reversed(_entries(project)):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            out.append(_read(path, seq))
    return out


def undo_last(project: Project) -> UndoResult:
    """Restore every caption the newest batch changed to its text before, and drop the batch.

    A caption whose text is no longer what the batch left is reported in `conflicts` and kept.
    Raises LoradeckError when there is nothing to undo.
    """
    entries = _entries(project)
    while entries:
        seq, path = entries.pop()
        try:
            recorded = _read(path, seq)
        except (OSError, ValueError, KeyError, TypeError):
            # A damaged entry cannot be undone; drop it so the ones before it still can.
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        result = UndoResult(label=recorded.label, seq=seq)
        for change in recorded.changes:
            name = Path(change["file"]).name
            target = project.dataset / name
            signature = caption_store.Signature.of(target)
            now = _read_text(target) if signature else None
            if text_hash(now) != change.get("after_sha256"):
                result.conflicts.append(name)
                continue
            try:
                _restore(target, change.get("before"), signature)
            except caption_store.CaptionConflict:
                result.conflicts.append(name)
                continue
            result.restored.append(name)
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as e:
            raise LoradeckError(f"restored {len(result.restored)} caption(s), but the journal entry "
                                f"{path} could not be removed: {e.strerror or e}") from None
        result.remaining = len(entries)
        return result
    raise LoradeckError(f"nothing to undo: no batch caption edit of {project.name} is recorded",
                        hint="find/replace, trigger, captioning and metadata imports are recorded")


def _read_text(path: Path) -> str | None:
    try:
        return caption_store.decode_caption(path.read_bytes())
    except FileNotFoundError:
        return None


def _restore(target: Path, before: str | None, signature) -> None:
    """Put `before` back into caption file `target` (None or blank: remove it), only if the file is
    still as just checked. caption_store writes `<image stem><ext>`; any stem stands in for the image."""
    ext = target.suffix
    stand_in = target.with_suffix(".image")
    caption_store.write_caption(stand_in, before or "", ext, if_unchanged_since=signature)
