"""Operations over all captions of a project: status, trigger word, find/replace, tags, metadata.jsonl.

Built on loradeck.trainer.dataset.caption_store (the only code that reads or writes a caption file), so every write
is atomic and refuses to clobber a file edited meanwhile. Edits return every change (file, before,
after); with `dry_run=True` nothing is written, which is the preview. Pure Python, no torch: the
TUI calls these from worker threads.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.dataset import caption_journal, caption_store
from loradeck.trainer.dataset.project import Project, dataset_images
from loradeck.trainer.errors import LoradeckError

METADATA_FILE = "metadata.jsonl"

CAPTIONED, MISSING, EMPTY, IGNORED_EXTENSION = "captioned", "missing", "empty", "ignored_extension"


def caption_extension(project: Project) -> str:
    return settings.load(project.settings_file).caption_extension


@dataclass
class CaptionStatus:
    image: str                  # file name in dataset/
    status: str                 # captioned | missing | empty | ignored_extension
    caption_file: str | None    # the file training reads, if it exists
    text: str | None            # its text
    ignored: list[str] = field(default_factory=list)  # caption files training would ignore


@dataclass
class Change:
    image: str
    caption_file: str
    before: str | None
    after: str


@dataclass
class EditResult:
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image, why)
    applied: bool = False       # False for a dry run (a preview)
    unmatched: list[str] = field(default_factory=list)            # metadata rows with no image
    bad_lines: list[tuple[int, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skipped"] = [list(x) for x in self.skipped]
        d["bad_lines"] = [list(x) for x in self.bad_lines]
        return d


# ---------------------------------------------------------------- status


def ignored_captions(stem: str, ext: str, names) -> list[str]:
    """The caption files of image `stem` among `names` that training ignores (another known extension)."""
    return [stem + e for e in caption_store.KNOWN_CAPTION_EXTENSIONS if e != ext and stem + e in names]


def caption_status(has_text: bool, exists: bool, ignored: list[str]) -> str:
    """The one rule for an image's caption state (also used by loradeck.trainer.dataset.view's fast listing).

    has_text: the project-extension sidecar has non-blank text; exists: that sidecar exists;
    ignored: caption files training would not read (see ignored_captions).
    """
    if has_text:
        return CAPTIONED
    if ignored:
        return IGNORED_EXTENSION
    return EMPTY if exists else MISSING


def list_captions(project: Project, ext: str | None = None) -> list[CaptionStatus]:
    """Every dataset image with the state of its caption, sorted by image name."""
    ext = ext or caption_extension(project)
    names = {p.name for p in project.dataset.iterdir()} if project.dataset.is_dir() else set()
    rows = []
    for image in dataset_images(project):
        ignored = ignored_captions(image.stem, ext, names)
        cap = image.stem + ext
        text = caption_store.read_caption(image, ext) if cap in names else None
        status = caption_status(bool(text), text is not None, ignored)
        rows.append(CaptionStatus(image.name, status, cap if text is not None else None, text, ignored))
    return rows


def uncaptioned(project: Project) -> list[CaptionStatus]:
    """Images training would see without a caption (missing, empty, or only an ignored extension)."""
    return [row for row in list_captions(project) if row.status != CAPTIONED]


def orphan_captions(project: Project) -> list[str]:
    """Caption files in dataset/ with no image of the same stem."""
    if not project.dataset.is_dir():
        return []
    stems = {p.stem for p in dataset_images(project)}
    return sorted(p.name for p in project.dataset.iterdir()
                  if p.suffix in caption_store.KNOWN_CAPTION_EXTENSIONS and p.stem not in stems)


# ---------------------------------------------------------------- edits


def _apply(project: Project, ext: str, planned: list[tuple[Path, str | None, str, object]],
           result: EditResult, dry_run: bool, label: str) -> EditResult:
    """Write the planned (image, before, after, signature) edits unless dry_run; conflicts are skipped.
    What was written is journalled as one batch named `label` (loradeck.trainer.dataset.caption_journal: undoable)."""
    for image, before, after, signature in planned:
        change = Change(image.name, image.stem + ext, before, after)
        if not dry_run:
            try:
                caption_store.write_caption(image, after, ext, if_unchanged_since=signature)
            except caption_store.CaptionConflict as e:
                result.skipped.append((image.name, e.one_line()))
                continue
        result.changes.append(change)
    result.applied = not dry_run
    if not dry_run:
        caption_journal.record_batch(project, label, result.changes)
    return result


def _read_all(project: Project, ext: str):
    for image in dataset_images(project):
        path = caption_store.caption_path(image, ext)
        signature = caption_store.Signature.of(path)
        text = caption_store.read_caption(image, ext) if signature else None
        yield image, text, signature


def with_trigger(text: str | None, trigger: str) -> str:
    """`text` with `trigger` as its first tag: unchanged if it already is, moved there if it is a
    tag further on, else prepended as `trigger, text`. Applying it twice changes nothing more."""
    trigger = trigger.strip()
    if not text:
        return trigger
    tags = caption_store.split_tags(text)
    if tags and tags[0] == trigger:
        return text
    if trigger in tags:
        return caption_store.join_tags([trigger] + [t for t in tags if t != trigger])
    return f"{trigger}, {text}"


def set_trigger(project: Project, trigger: str, *, include_uncaptioned: bool = False,
                dry_run: bool = False) -> EditResult:
    """Make `trigger` the first tag of every caption (idempotent). With `include_uncaptioned`,
    images without a caption get the trigger word as their caption."""
    trigger = " ".join(trigger.split())
    if not trigger or "," in trigger:
        raise LoradeckError("a trigger word must be non-empty and contain no comma")
    ext = caption_extension(project)
    result, planned = EditResult(), []
    for image, text, signature in _read_all(project, ext):
        if not text and not include_uncaptioned:
            result.skipped.append((image.name, "no caption"))
            continue
        after = with_trigger(text, trigger)
        if after == text:
            result.unchanged += 1
        else:
            planned.append((image, text, after, signature))
    return _apply(project, ext, planned, result, dry_run, f"trigger {trigger!r}")


def remove_trigger(project: Project, trigger: str, *, dry_run: bool = False) -> EditResult:
    """Drop the tag `trigger` from every caption that has it (the undo of set_trigger's effect on
    captions; a caption that is only the trigger word is skipped: captions are never deleted here)."""
    trigger = " ".join(trigger.split())
    if not trigger or "," in trigger:
        raise LoradeckError("a trigger word must be non-empty and contain no comma")
    ext = caption_extension(project)
    result, planned = EditResult(), []
    for image, text, signature in _read_all(project, ext):
        tags = caption_store.split_tags(text or "")
        if trigger not in tags:
            result.unchanged += bool(text)
            continue
        after = caption_store.join_tags([t for t in tags if t != trigger])
        if not after:
            result.skipped.append((image.name, "the caption is only the trigger word"))
            continue
        planned.append((image, text, after, signature))
    return _apply(project, ext, planned, result, dry_run, f"remove trigger {trigger!r}")


def _tidy(text: str, had_commas: bool) -> str:
    """Clean what a removal leaves behind: empty tags (`a, , b`) and doubled spaces."""
    text = " ".join(text.split())
    if had_commas:
        text = caption_store.join_tags(caption_store.split_tags(text))
    return text


def compile_pattern(find: str, *, regex: bool = False, ignore_case: bool = False) -> re.Pattern:
    if not find:
        raise LoradeckError("nothing to find: the search text is empty")
    try:
        return re.compile(find if regex else re.escape(find), re.IGNORECASE if ignore_case else 0)
    except re.error as e:
        raise LoradeckError(f"invalid regular expression {find!r}: {e}") from None


def replace_text(project: Project, find: str, replacement: str, *, regex: bool = False,
                 ignore_case: bool = False, dry_run: bool = False) -> EditResult:
    """Find/replace in every caption (plain text, or a Python regex with \\1 groups).

    Returns every change with its before/after; `dry_run` is the preview. A replacement that would
    leave a caption empty is skipped (captions are never deleted by a find/replace).
    """
    pattern = compile_pattern(find, regex=regex, ignore_case=ignore_case)
    ext = caption_extension(project)
    result, planned = EditResult(), []
    for image, text, signature in _read_all(project, ext):
        if not text:
            continue
        try:
            replaced = pattern.sub(replacement if regex else (lambda _m: replacement), text)
        except (re.error, IndexError) as e:
            raise LoradeckError(f"invalid replacement {replacement!r}: {e}") from None
        if replaced == text:
            result.unchanged += 1
            continue
        after = _tidy(replaced, "," in text)
        if not after:
            result.skipped.append((image.name, "the replacement would leave the caption empty"))
            continue
        planned.append((image, text, after, signature))
    return _apply(project, ext, planned, result, dry_run, f"replace {find!r} with {replacement!r}")


def set_caption(project: Project, image_name: str, text: str) -> Change:
    """Set one image's caption (blank text removes it)."""
    image = project.dataset / Path(image_name).name
    if image not in dataset_images(project):
        raise LoradeckError(f"no image {image_name!r} in {project.name}'s dataset")
    ext = caption_extension(project)
    before = caption_store.read_caption(image, ext)
    caption_store.write_caption(image, text, ext)
    return Change(image.name, image.stem + ext, before, caption_store.normalize(text))


# ---------------------------------------------------------------- tags


def tag_frequency(project: Project) -> list[tuple[str, int]]:
    """(tag, number of captions containing it), most frequent first (kohya's ss_tag_frequency)."""
    ext = caption_extension(project)
    counts: Counter[str] = Counter()
    for _image, text, _sig in _read_all(project, ext):
        if text:
            counts.update(set(caption_store.split_tags(text)))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


# ---------------------------------------------------------------- metadata.jsonl


def export_metadata(project: Project, dest: str | Path | None = None) -> dict:
    """Write a diffusers imagefolder `metadata.jsonl` ({"file_name", "text"} per image).

    Default: dataset/metadata.jsonl, next to the images (file_name is relative to that folder).
    Every image gets a row; uncaptioned ones have empty text and are counted in `missing`.
    """
    ext = caption_extension(project)
    path = Path(dest) if dest else project.dataset / METADATA_FILE
    if path.is_dir():
        path = path / METADATA_FILE
    lines, missing = [], 0
    for image, text, _sig in _read_all(project, ext):
        missing += not text
        lines.append(json.dumps({"file_name": image.name, "text": text or ""}, ensure_ascii=False))
    try:
        atomic_write_text(path, "".join(line + "\n" for line in lines))
    except OSError as e:
        raise LoradeckError(f"cannot write {path}: {e.strerror or e}") from None
    return {"path": str(path), "rows": len(lines), "missing": missing}


def import_metadata(project: Project, source: str | Path, *, overwrite: bool = False,
                    dry_run: bool = False) -> EditResult:
    """Set captions from a metadata.jsonl (`file_name` + `text`, or `caption`).

    Rows are matched to dataset images by file name, else by stem (a .png prepared from a .jpg);
    existing different captions are kept unless `overwrite`. Bad lines and unmatched rows are
    reported, never fatal.
    """
    source = Path(source)
    try:
        raw_lines = source.read_text(encoding="utf-8-sig").splitlines()
    except OSError as e:
        raise LoradeckError(f"cannot read {source}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise LoradeckError(f"{source} is not utf-8 text") from None
    ext = caption_extension(project)
    images = dataset_images(project)
    by_name = {p.name: p for p in images}
    by_stem: dict[str, list[Path]] = {}
    for p in images:
        by_stem.setdefault(p.stem, []).append(p)
    result, planned, seen = EditResult(), [], set()
    for lineno, line in enumerate(raw_lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            name, text = row["file_name"], row.get("text", row.get("caption"))
            if not isinstance(name, str) or not isinstance(text, str):
                raise TypeError
        except (ValueError, KeyError, TypeError, AttributeError):
            result.bad_lines.append((lineno, "not a JSON object with string file_name and text"))
            continue
        base = Path(name.replace("\\", "/")).name
        image = by_name.get(base) or (by_stem.get(Path(base).stem, [None])[0]
                                      if len(by_stem.get(Path(base).stem, [])) == 1 else None)
        if image is None:
            result.unmatched.append(name)
            continue
        if image.name in seen:
            result.skipped.append((image.name, f"listed again on line {lineno}; the first row wins"))
            continue
        seen.add(image.name)
        after = caption_store.normalize(text)
        if not after:
            result.skipped.append((image.name, "empty text in metadata"))
            continue
        path = caption_store.caption_path(image, ext)
        signature = caption_store.Signature.of(path)
        before = caption_store.read_caption(image, ext) if signature else None
        if before == after:
            result.unchanged += 1
        elif before and not overwrite:
            result.skipped.append((image.name, "already captioned differently (use overwrite)"))
        else:
            planned.append((image, before, after, signature))
    return _apply(project, ext, planned, result, dry_run, f"import {source.name}")
