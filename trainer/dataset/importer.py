"""Import: copy image files and folders into a project's originals/, byte-identical.

- Each file is read once, validated through loradeck.trainer.dataset.image_probe (refused files get a one-line
  reason), hashed, and written atomically to originals/<stem><ext>; its modification time is kept.
- Duplicates (same bytes as an original already in the project, or earlier in this import) are
  imported once and reported. `.loradeck/import_index.json` (loradeck.trainer.dataset.import_index) maps
  content hashes to originals and is rebuilt from originals/ when files were added or removed by hand.
- A stem is unique per project (case-insensitively, across originals/ and dataset/), so
  dataset/<stem>.<img> and dataset/<stem><caption ext> pair up. A clash gets `<stem>-2`, `-3`, ...
- Sidecar captions (`photo.txt` or kohya's `photo.caption` next to `photo.jpg`) are written to
  dataset/<stem><project caption extension>; an existing caption there is never overwritten (the
  report says so).
- kohya repeat folders (`10_cat`) are recognised and reported; training applies them per image
  (loradeck.trainer.dataset.repeat_folders reads them back from the sources this index records).
- One bad file never stops the others; Ctrl-C keeps what was imported (the index is saved).
- Reading and validating run a few files ahead in threads; naming and writing stay in order, so
  the result does not depend on timing.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import unicodedata
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from loradeck.trainer.atomic import atomic_write_bytes
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.dataset import caption_store, image_probe, repeat_folders
from loradeck.trainer.dataset.import_index import load_index, save_index, sha256_bytes, visible_files
from loradeck.trainer.dataset.project import Project

MAX_STEM_LENGTH = 120
# Files are read and validated a few ahead of the (sequential) naming and copying, in threads.
READ_THREADS = 3
READ_AHEAD = 6
# Characters that cannot or should not appear in a file name on any common file system.
_BAD_CHARS = re.compile(r'[\x00-\x1f\x7f/\\:*?"<>|]')

ProgressFn = Callable[[int, int, str, "str | None"], None]


@dataclass
class ImportReport:
    imported: list[str] = field(default_factory=list)                  # names written to originals/
    duplicates: list[tuple[str, str]] = field(default_factory=list)    # (source, existing original)
    refused: list[tuple[str, str]] = field(default_factory=list)       # (source, one-line reason)
    renamed: list[tuple[str, str]] = field(default_factory=list)       # (source, name in originals/)
    captions_imported: list[str] = field(default_factory=list)         # caption names in dataset/
    captions_skipped: list[tuple[str, str]] = field(default_factory=list)  # (source caption, why)
    repeat_folders: dict[str, int] = field(default_factory=dict)       # kohya `N_name` folder -> N
    notes: list[str] = field(default_factory=list)                     # dataset formats: what was mapped
    stopped: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("duplicates", "refused", "renamed", "captions_skipped"):
            d[key] = [list(x) for x in d[key]]
        return d


# ---------------------------------------------------------------- names


def clean_stem(stem: str) -> str:
    """A safe file stem that keeps the user's (unicode) name wherever possible."""
    stem = unicodedata.normalize("NFC", stem)
    stem = _BAD_CHARS.sub("_", stem).strip().lstrip(".").rstrip(". ")
    if len(stem.encode("utf-8")) > MAX_STEM_LENGTH:
        stem = stem.encode("utf-8")[:MAX_STEM_LENGTH].decode("utf-8", errors="ignore").rstrip(". ")
    return stem or "image"


def _taken_stems(project: Project) -> set[str]:
    taken = set()
    for folder in (project.originals, project.dataset):
        for p in visible_files(folder):
            taken.add(p.stem.casefold())
    return taken


def _unique_stem(base: str, taken: set[str]) -> str:
    stem, n = base, 1
    while stem.casefold() in taken:
        n += 1
        stem = f"{base}-{n}"
    taken.add(stem.casefold())
    return stem


# ---------------------------------------------------------------- gathering sources


def _is_caption(path: Path) -> bool:
    return path.suffix.lower() in caption_store.KNOWN_CAPTION_EXTENSIONS


def gather(paths: Iterable[str | os.PathLike], report: ImportReport) -> list[Path]:
    """Every candidate file under `paths` (folders recursively, hidden entries skipped), in order.

    Missing paths and caption files with no image beside them go to `report.refused`; kohya
    repeat folders go to `report.repeat_folders`.
    """
    found: list[Path] = []
    captions: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            _note_repeat_folder(path, report)
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for d in dirnames:
                    _note_repeat_folder(Path(dirpath) / d, report)
                for name in sorted(filenames):
                    if not name.startswith("."):
                        p = Path(dirpath) / name
                        (captions if _is_caption(p) else found).append(p)
        elif path.is_file():
            (captions if _is_caption(path) else found).append(path)
        elif path.exists():
            report.refused.append((str(path), "not a regular file"))
        else:
            report.refused.append((str(path), "no such file or folder"))
    stems = {(p.parent, p.stem) for p in found}
    for cap in captions:
        if (cap.parent, cap.stem) not in stems:
            report.refused.append((str(cap), "caption file without an image beside it"))
    # The same file named twice (a folder and a file in it) is imported once.
    unique, seen = [], set()
    for p in found:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _note_repeat_folder(folder: Path, report: ImportReport) -> None:
    n = repeat_folders.repeats_of_folder(folder.name)
    if n:
        report.repeat_folders[str(folder)] = n


def sidecar_caption(image: Path, preferred_ext: str) -> Path | None:
    """The caption file next to a source image: the project's extension first, then .txt/.caption."""
    order = [preferred_ext] + [e for e in caption_store.KNOWN_CAPTION_EXTENSIONS if e != preferred_ext]
    for ext in order:
        candidate = image.with_name(image.stem + ext)
        if candidate.is_file():
            return candidate
    return None


# ---------------------------------------------------------------- import


def import_paths(project: Project, paths: Iterable[str | os.PathLike], *, on_progress: ProgressFn | None = None,
                 should_stop: Callable[[], bool] | None = None, captions: Mapping[str, str | None] | None = None,
                 repeats: Mapping[str, int] | None = None, report: ImportReport | None = None) -> ImportReport:
    """Import files and folders into `project`; returns what happened to each file.

    `on_progress(done, total, source_name, problem_or_None)` is called once with done=0 when the
    files are known, then after each candidate file; `should_stop()` is polled between files.
    `captions` / `repeats` (keyed by source_key(path)) come from a dataset description such as a
    metadata.jsonl or a kohya dataset TOML (loradeck.trainer.dataset.formats): a source listed in `captions`
    takes that text (None: no caption) instead of its sidecar file, and one in `repeats` records its
    repeat count in the import index.
    """
    caption_ext = settings_mod.load(project.settings_file).caption_extension
    report = report if report is not None else ImportReport()
    overrides = _Overrides(captions or {}, repeats or {})
    sources = []
    inside = project.path.resolve()
    for src in gather(paths, report):
        if inside in src.resolve().parents:
            report.refused.append((str(src), "already inside the project"))
        else:
            sources.append(src)
    project.originals.mkdir(parents=True, exist_ok=True)
    project.dataset.mkdir(parents=True, exist_ok=True)
    index = load_index(project)
    taken = _taken_stems(project)
    if on_progress:
        on_progress(0, len(sources), "", None)
    try:
        for done, loaded in enumerate(_read_ahead(sources, should_stop), 1):
            if loaded is None:
                report.stopped = True
                break
            problem = _import_one(project, loaded, caption_ext, index, taken, report, overrides)
            if on_progress:
                on_progress(done, len(sources), loaded.src.name, problem)
    finally:
        save_index(project, index)
    return report


@dataclass
class _Loaded:
    """One source file read and validated (off the main thread)."""

    src: Path
    data: bytes = b""
    info: image_probe.ImageInfo | None = None
    sha256: str = ""
    problem: str | None = None


def _load(src: Path) -> _Loaded:
    try:
        image_probe.open_image(src).close()  # the header first: a stray 2 GB video is never read
        data = src.read_bytes()
        info = image_probe.probe(data, name=src.name)
    except OSError as e:
        return _Loaded(src, problem=f"unreadable: {e.strerror or e}")
    except image_probe.ImageRefused as e:
        return _Loaded(src, problem=str(e))
    return _Loaded(src, data, info, sha256_bytes(data))


def _read_ahead(sources: list[Path], should_stop: Callable[[], bool] | None):
    """Yield each source loaded, in order, decoding a few ahead in threads (Pillow and hashlib
    release the GIL); yields None when a stop is requested. At most READ_AHEAD files in memory."""
    with ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="import-read") as pool:
        queue: deque = deque()
        pending = iter(sources)
        try:
            while True:
                while len(queue) < READ_AHEAD:
                    src = next(pending, None)
                    if src is None:
                        break
                    queue.append(pool.submit(_load, src))
                if not queue:
                    return
                if should_stop and should_stop():
                    yield None
                    return
                yield queue.popleft().result()
        finally:
            for future in queue:
                future.cancel()


def source_key(path: str | os.PathLike) -> str:
    """How a source file is named in the `captions` / `repeats` of import_paths."""
    return os.path.realpath(os.path.expanduser(path))


@dataclass
class _Overrides:
    captions: Mapping[str, str | None]
    repeats: Mapping[str, int]


def _import_one(project: Project, loaded: _Loaded, caption_ext: str, index: dict, taken: set[str],
                report: ImportReport, overrides: _Overrides) -> str | None:
    """Import one loaded file; returns the refusal reason, or None."""
    src = loaded.src
    if loaded.problem:
        report.refused.append((str(src), loaded.problem))
        return loaded.problem
    key = source_key(src)
    existing = index.get(loaded.sha256)
    if existing:
        report.duplicates.append((str(src), existing["file"]))
        if key in overrides.repeats:  # the same picture, now listed with repeats: the new count holds
            existing["repeats"] = overrides.repeats[key]
        _import_caption(project, src, Path(existing["file"]).stem, caption_ext, report, overrides)
        return None
    stem = _unique_stem(clean_stem(src.stem), taken)
    name = stem + loaded.info.suffix_for(src.name).lower()
    target = project.originals / name
    try:
        atomic_write_bytes(target, loaded.data)
        st = src.stat()
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # keep the photo's date
    except OSError as e:
        taken.discard(stem.casefold())
        reason = f"could not copy into the project: {e.strerror or e}"
        report.refused.append((str(src), reason))
        return reason
    index[loaded.sha256] = {"file": name, "source": os.path.abspath(src),
                            "imported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if key in overrides.repeats:
        index[loaded.sha256]["repeats"] = overrides.repeats[key]
    report.imported.append(name)
    if name != src.name:
        report.renamed.append((str(src), name))
    _import_caption(project, src, stem, caption_ext, report, overrides)
    return None


def _report_other_sidecars(src: Path, used: Path, text: str, report: ImportReport) -> None:
    """photo.txt and photo.caption side by side with different text: one is imported, and the other
    is named in the report instead of being dropped silently."""
    for ext in caption_store.KNOWN_CAPTION_EXTENSIONS:
        other = src.with_name(src.stem + ext)
        if other == used or not other.is_file():
            continue
        try:
            other_text = caption_store.decode_caption(other.read_bytes())
        except OSError:
            continue
        if other_text and caption_store.normalize(other_text) != caption_store.normalize(text):
            report.captions_skipped.append((str(other), f"not imported: {used.name} beside it was used,"
                                                        " and the two texts differ"))


def _import_caption(project: Project, src: Path, stem: str, caption_ext: str, report: ImportReport,
                    overrides: _Overrides | None = None) -> None:
    key = source_key(src)
    if overrides is not None and key in overrides.captions:
        # From the dataset description (metadata row, kohya subset): it says what the caption is.
        text = overrides.captions[key]
        if not text or not text.strip():
            return
        sidecar = src  # named in the report lines below
    else:
        sidecar = sidecar_caption(src, caption_ext)
        if sidecar is None:
            return
        try:
            raw = sidecar.read_bytes()
        except OSError as e:
            report.captions_skipped.append((str(sidecar), f"unreadable: {e.strerror or e}"))
            return
        text = caption_store.decode_caption(raw)
        if not text:
            report.captions_skipped.append((str(sidecar), "empty caption file"))
            return
        _report_other_sidecars(src, sidecar, text, report)
    image = project.dataset / (stem + ".png")  # caption_store only uses the stem
    current = caption_store.read_caption(image, caption_ext)
    target_name = stem + caption_ext
    if current:  # an empty caption file is no caption: it is filled
        if current != caption_store.normalize(text):
            report.captions_skipped.append((str(sidecar), f"{target_name} already exists with other text;"
                                                          " kept the existing caption"))
        return
    try:
        caption_store.write_caption(image, text, caption_ext)
    except OSError as e:
        report.captions_skipped.append((str(sidecar), f"could not write {target_name}: {e.strerror or e}"))
        return
    report.captions_imported.append(target_name)
