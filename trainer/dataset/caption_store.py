"""Caption sidecars: `<stem><ext>` next to each dataset image, utf-8, written atomically.

The extension comes from project.toml ([project] caption_extension, default `.txt`). This module
is the only code that reads or writes caption files; operations over many captions (trigger word,
find/replace, tag frequencies, metadata.jsonl) live in loradeck.trainer.dataset.caption_ops and call it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.errors import LoradeckError

# Extensions other tools use for captions; one that is not the project's is "ignored by training".
KNOWN_CAPTION_EXTENSIONS = (".txt", ".caption")


class CaptionConflict(LoradeckError):
    """The caption file changed on disk since the caller read it; nothing was written."""


@dataclass(frozen=True)
class Signature:
    """What a caption file looked like when read: compare before writing to detect outside edits."""

    mtime_ns: int
    size: int

    @staticmethod
    def of(path: Path) -> "Signature | None":
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return Signature(st.st_mtime_ns, st.st_size)


def caption_path(image: Path, ext: str = ".txt") -> Path:
    return image.with_name(image.stem + ext)


def read_caption(image: Path, ext: str = ".txt") -> str | None:
    """The caption text (stripped of surrounding whitespace), or None when there is no file.

    Undecodable bytes are replaced rather than failing: a caption must always be viewable.
    """
    path = caption_path(image, ext)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return decode_caption(data)


def decode_caption(data: bytes) -> str:
    """Caption bytes to text: utf-8 (a Windows BOM dropped), bad bytes replaced, whitespace stripped."""
    if data.startswith(b"\xef\xbb\xbf"):  # a BOM from Windows editors
        data = data[3:]
    return data.decode("utf-8", errors="replace").strip()


def normalize(text: str) -> str:
    """The text as write_caption stores it: stripped, several lines joined into one."""
    text = text.strip()
    if "\n" in text:
        return " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text


def has_caption(image: Path, ext: str = ".txt") -> bool:
    text = read_caption(image, ext)
    return bool(text)


def write_caption(image: Path, text: str, ext: str = ".txt", *,
                  if_unchanged_since: Signature | None | bool = False) -> Signature | None:
    """Atomically set the caption of `image`. Blank text removes the caption file.

    `if_unchanged_since`: pass the Signature you read (or None if there was no file) to refuse the
    write with CaptionConflict when someone else changed the file meanwhile. Returns the new
    Signature (None after a removal).
    """
    path = caption_path(image, ext)
    if if_unchanged_since is not False and Signature.of(path) != if_unchanged_since:
        raise CaptionConflict(f"{path.name} changed on disk since it was opened; not overwritten",
                              hint="reload it, or save your text explicitly over it")
    text = normalize(text)
    if not text:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return None
    atomic_write_text(path, text + "\n")
    return Signature.of(path)


def split_tags(text: str) -> list[str]:
    """Comma-separated tags, trimmed, empty ones dropped (booru style captions)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def join_tags(tags: list[str]) -> str:
    return ", ".join(tags)


_JOIN_PUNCT = ",;:."


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _has_affix_at(text: str, affix: str, *, start: bool) -> bool:
    """Is `affix` already a whole word/phrase at the start (or end) of `text`? Case-insensitive."""
    t, a = _norm(text), _norm(affix).strip(_JOIN_PUNCT + " ")
    if not a:
        return True
    if start:
        rest = t[len(a):] if t.startswith(a) else None
        return rest is not None and (rest == "" or rest[0] in _JOIN_PUNCT + " ")
    head = t[:-len(a)] if t.endswith(a) else None
    return head is not None and (head == "" or head[-1] in _JOIN_PUNCT + " ")


def apply_affixes(text: str, prefix: str = "", suffix: str = "") -> str:
    """`prefix, text, suffix`, idempotently: an affix already at its end of `text` is not added again.

    Affixes join with ", " (kohya tag style) unless they bring their own punctuation
    ("ohwx," or ", by artist" are used as given).
    """
    text = " ".join(text.split())
    prefix, suffix = " ".join((prefix or "").split()), " ".join((suffix or "").split())
    if prefix and not _has_affix_at(text, prefix, start=True):
        joint = " " if prefix[-1] in _JOIN_PUNCT else ", "
        text = prefix + joint + text if text else prefix.rstrip(_JOIN_PUNCT)
    if suffix and not _has_affix_at(text, suffix, start=False):
        joint = "" if suffix[0] in _JOIN_PUNCT else ", "
        text = text + joint + suffix if text else suffix.lstrip(_JOIN_PUNCT + " ")
    return text
