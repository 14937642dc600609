"""A fast, read-only listing of a project's dataset for front ends: images and their caption status.

One `os.scandir` of dataset/ and of originals/; no image is opened and captions are not read (but
for the rare sidecar of a few bytes), so a 10 000-image project lists in milliseconds. Caption text is read on demand (`load_captions`) for
filters that need it.

Caption status of an image: loradeck.trainer.dataset.caption_ops.caption_status, the one rule (captioned / missing /
empty / ignored_extension), fed from the scan: a sidecar has text when it is non-empty (one
small enough to be only whitespace or a BOM is read to make sure).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.dataset.caption_ops import (
    CAPTIONED,
    EMPTY,
    IGNORED_EXTENSION,
    MISSING,
    caption_status,
    ignored_captions,
)
from loradeck.trainer.dataset.caption_store import KNOWN_CAPTION_EXTENSIONS, decode_caption, read_caption
from loradeck.trainer.dataset.project import IMAGE_EXTENSIONS, Project

__all__ = ["CAPTIONED", "EMPTY", "IGNORED_EXTENSION", "MISSING", "DatasetEntry", "DatasetListing",
           "list_dataset", "load_captions"]

# A sidecar up to this size may hold only whitespace / a BOM (blank, so not a caption): it is read.
_MAYBE_BLANK = 8


@dataclass
class DatasetEntry:
    """One prepared image in dataset/."""

    name: str                  # file name, e.g. "cat_01.png"
    path: Path
    status: str                # CAPTIONED / MISSING / EMPTY / IGNORED_EXTENSION (caption_ops)
    other_caption: str | None = None  # the file name of an ignored-extension caption, if any

    @property
    def stem(self) -> str:
        return os.path.splitext(self.name)[0]


@dataclass
class DatasetListing:
    """Every dataset image plus counts, as of one directory scan."""

    entries: list[DatasetEntry] = field(default_factory=list)
    originals: int = 0         # files imported into originals/
    caption_extension: str = ".txt"

    @property
    def images(self) -> int:
        return len(self.entries)

    @property
    def captioned(self) -> int:
        return sum(1 for e in self.entries if e.status == CAPTIONED)

    @property
    def missing(self) -> int:
        return sum(1 for e in self.entries if e.status != CAPTIONED)

    @property
    def ignored(self) -> int:
        return sum(1 for e in self.entries if e.status == IGNORED_EXTENSION)


def _scan(directory: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(directory) as it:
            return [e for e in it if not e.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _caption_extension(project: Project) -> str:
    try:
        return settings.load(project.settings_file).caption_extension
    except Exception:  # a broken project.toml must not hide the images; the default is shown
        return ".txt"


def _has_text(path: Path) -> bool:
    try:
        return bool(decode_caption(path.read_bytes()))
    except OSError:
        return False


def list_dataset(project: Project, caption_extension: str | None = None) -> DatasetListing:
    """Scan dataset/ (and count originals/) without opening any image, nor any caption file but
    the few tiny enough to be blank."""
    ext = caption_extension or _caption_extension(project)
    images: list[os.DirEntry] = []
    caption_sizes: dict[str, int] = {}   # file name -> size, for known caption extensions
    wanted = {ext.lower(), *KNOWN_CAPTION_EXTENSIONS}
    for entry in _scan(project.dataset):
        suffix = os.path.splitext(entry.name)[1].lower()
        if suffix in IMAGE_EXTENSIONS:
            images.append(entry)
        elif suffix in wanted:
            try:
                caption_sizes[entry.name] = entry.stat().st_size
            except OSError:
                continue
    images.sort(key=lambda e: e.name)
    out = []
    for entry in images:
        stem = os.path.splitext(entry.name)[0]
        size = caption_sizes.get(stem + ext)
        has_text = bool(size) and (size > _MAYBE_BLANK or _has_text(project.dataset / (stem + ext)))
        ignored = [] if has_text else ignored_captions(stem, ext, caption_sizes)
        out.append(DatasetEntry(entry.name, Path(entry.path), caption_status(has_text, size is not None, ignored),
                                ignored[0] if ignored else None))
    originals = sum(1 for e in _scan(project.originals)
                    if os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)
    return DatasetListing(out, originals, ext)


def load_captions(entries: Iterable[DatasetEntry], caption_extension: str) -> dict[str, str]:
    """Caption text by image name, for the captioned entries (read on demand, e.g. for a filter)."""
    texts = {}
    for entry in entries:
        if entry.status == CAPTIONED:
            texts[entry.name] = read_caption(entry.path, caption_extension) or ""
    return texts
