"""Datasets as people have them: a Hugging Face imagefolder or a kohya dataset TOML, imported in one step.

    import_sources(project, paths, caption_column=None, ...) -> ImportReport

Each PATH given to `loradeck import` is one of:

- a **kohya dataset config** (`*.toml` with `[[datasets]]` / `[[datasets.subsets]]`): every subset's
  `image_dir` is imported (the images directly in it, as kohya reads them) with its captions
  (`caption_extension`, else `class_tokens` for an image without a caption file) and its
  `num_repeats`, which the import index records per image (loradeck.trainer.dataset.repeat_folders reads it back).
  Keys with a loradeck equivalent go to project.toml ([prep] resolution and buckets, [train]
  batch_size, keep_tokens, shuffle_caption, caption_dropout_rate); kohya features loradeck lacks
  are accepted only at their "off" value; unknown keys are refused, all listed at once;
- a **Hugging Face imagefolder**: a folder with `metadata.jsonl` or `metadata.csv` (in it or in split
  folders such as train/), whose rows name a `file_name` relative to the metadata file and carry the
  caption in a text column: `--caption-column`, else the first of text / caption / prompt. Every image
  under the folder is imported; the listed ones get their row's caption;
- anything else: files and folders as before (loradeck.trainer.dataset.importer), sidecar captions and kohya
  `N_name` repeat folders included.

Nothing is imported when a description is wrong: its problems are one ConfigError.
"""

from __future__ import annotations

import csv
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.config.kohya import _resolution
from loradeck.trainer.dataset.caption_store import apply_affixes, decode_caption
from loradeck.trainer.dataset.importer import ImportReport, import_paths, source_key
from loradeck.trainer.dataset.project import Project, is_image_file
from loradeck.trainer.errors import ConfigError

METADATA_FILES = ("metadata.jsonl", "metadata.csv")
CAPTION_COLUMNS = ("text", "caption", "prompt")
KOHYA_DEFAULT_CAPTION_EXTENSION = ".caption"  # kohya's own default when none is given

# Dataset-wide kohya keys with a project-wide loradeck equivalent: key -> (table, key).
_PROJECT_KEYS = {
    "resolution": ("prep", "resolution"),
    "min_bucket_reso": ("prep", "bucket_min_side"),
    "max_bucket_reso": ("prep", "bucket_max_side"),
    "bucket_reso_steps": ("prep", "bucket_step"),
    "batch_size": ("train", "batch_size"),
    "keep_tokens": ("train", "keep_tokens"),
    "shuffle_caption": ("train", "shuffle_caption"),
    "caption_dropout_rate": ("train", "caption_dropout_rate"),
}
# Keys that change nothing about what is trained here: key -> why (a note in the report).
_ACCEPTED = {
    "enable_bucket": "loradeck always trains aspect buckets made by `loradeck prep`",
    "bucket_no_upscale": "`loradeck prep` never upscales",
    "cache_info": "loradeck keeps its own dataset index",
    "resize_interpolation": "`loradeck prep` chooses the resampling filter",
}
# kohya features loradeck does not have: accepted only at their "off" value.
_OFF_ONLY = {
    "flip_aug": (False,), "color_aug": (False,), "random_crop": (False,), "face_crop_aug_range": (None,),
    "is_reg": (False,), "caption_tag_dropout_rate": (0, 0.0), "caption_dropout_every_n_epochs": (0,),
    "keep_tokens_separator": ("",), "secondary_separator": ("",), "enable_wildcard": (False,),
    "caption_separator": (",",), "skip_image_resolution": (None,),
}
# Keys read per subset (inheriting from [[datasets]] and [general]).
_SUBSET_KEYS = {"image_dir", "num_repeats", "caption_extension", "class_tokens", "caption_prefix",
                "caption_suffix"}
_SUBSET_ONLY = {"image_dir", "class_tokens", "is_reg", "metadata_file"}
_KNOWN = set(_PROJECT_KEYS) | set(_ACCEPTED) | set(_OFF_ONLY) | _SUBSET_KEYS | {"metadata_file"}


@dataclass
class SourcePlan:
    """What a dataset description asks to import."""

    kind: str                                            # imagefolder | kohya
    source: Path
    files: list[Path] = field(default_factory=list)
    captions: dict[str, str | None] = field(default_factory=dict)   # source_key -> caption (None: none)
    repeats: dict[str, int] = field(default_factory=dict)           # source_key -> num_repeats
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # project.toml table -> values
    notes: list[str] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)


# ---------------------------------------------------------------- detection


def metadata_files(folder: Path) -> list[Path]:
    """metadata.jsonl / metadata.csv in `folder` and its sub-folders (imagefolder splits), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found += [Path(dirpath) / name for name in METADATA_FILES if name in filenames]
    return found


def plan_source(path: str | os.PathLike, caption_column: str | None = None) -> SourcePlan | None:
    """The plan for one PATH of `loradeck import`, or None when it is plain files/folders."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix.lower() == ".toml":
        return plan_kohya(p)
    if p.is_file() and p.name in METADATA_FILES:
        return plan_imagefolder(p.parent, caption_column, only=[p])
    if p.is_dir() and metadata_files(p):
        return plan_imagefolder(p, caption_column)
    return None


# ---------------------------------------------------------------- Hugging Face imagefolder


def _read_rows(meta: Path) -> list[dict]:
    try:
        text = meta.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ConfigError(f"cannot read {meta}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{meta} is not utf-8 text") from None
    if meta.suffix == ".csv":
        try:
            return list(csv.DictReader(text.splitlines()))
        except csv.Error as e:
            raise ConfigError(f"{meta}: not valid CSV: {e}") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise ConfigError(f"{meta} line {n} is not JSON") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{meta} line {n} is not a JSON object")
        rows.append(row)
    return rows


def caption_column_of(meta: Path, rows: list[dict], wanted: str | None) -> str:
    """The text column: `wanted`, else the first of text / caption / prompt that the rows have."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    if "file_name" not in columns:
        raise ConfigError(f"{meta} has no file_name column (columns: {', '.join(columns) or 'none'})",
                          hint="a Hugging Face imagefolder names each image in file_name")
    if wanted:
        if wanted not in columns:
            raise ConfigError(f"{meta} has no column {wanted!r} (columns: {', '.join(columns)})")
        return wanted
    for name in CAPTION_COLUMNS:
        if name in columns:
            return name
    raise ConfigError(f"{meta}: no caption column found among {', '.join(columns)}",
                      hint="name it with --caption-column COLUMN")


def plan_imagefolder(folder: Path, caption_column: str | None = None, *,
                     only: list[Path] | None = None) -> SourcePlan:
    """Every image under `folder`, captioned from its metadata file(s)."""
    plan = SourcePlan("imagefolder", folder)
    listed: set[str] = set()
    for meta in only or metadata_files(folder):
        rows = _read_rows(meta)
        column = caption_column_of(meta, rows, caption_column)
        plan.notes.append(f"{meta}: {len(rows)} row(s), captions from column {column!r}")
        for row in rows:
            name = row.get("file_name")
            text = row.get(column)
            if not isinstance(name, str) or not name.strip():
                plan.refused.append((str(meta), f"a row without a file_name: {json.dumps(row)[:80]}"))
                continue
            image = (meta.parent / name.replace("\\", "/")).resolve()
            if not image.is_file():
                plan.refused.append((str(meta.parent / name), f"listed in {meta.name} but not there"))
                continue
            key = source_key(image)
            if key in listed:
                continue  # listed twice: the first row wins
            listed.add(key)
            plan.captions[key] = text.strip() if isinstance(text, str) and text.strip() else None
            plan.files.append(image)
    listed_files = {source_key(f) for f in plan.files}
    for dirpath, dirnames, filenames in os.walk(folder):  # images the metadata does not list come too
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and is_image_file(path) and source_key(path) not in listed_files:
                plan.files.append(path)
    return plan


# ---------------------------------------------------------------- kohya dataset TOML


def _where(d: int | None, s: int | None) -> str:
    if d is None:
        return "[general]"
    return f"[[datasets]] #{d + 1}" + (f" [[datasets.subsets]] #{s + 1}" if s is not None else "")


def plan_kohya(path: Path) -> SourcePlan:
    """Read a kohya dataset config (see the module docstring). ConfigError lists every problem."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    datasets = doc.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise ConfigError(f"{path} is not a kohya dataset config: it has no [[datasets]]",
                          hint="a training config goes to `loradeck train --config`; a dataset config has"
                               " [[datasets]] with [[datasets.subsets]]")
    problems: list[str] = []
    unknown_top = sorted(set(doc) - {"general", "datasets"})
    if unknown_top:
        problems.append(f"unknown table(s) {', '.join(unknown_top)}")
    general = doc.get("general", {})
    _check_keys(general, None, None, problems)
    plan = SourcePlan("kohya", path)
    project_values: dict[str, dict[Any, list[str]]] = {}
    base_dir = path.parent
    for d, dataset in enumerate(datasets):
        subsets = dataset.get("subsets")
        _check_keys({k: v for k, v in dataset.items() if k != "subsets"}, d, None, problems)
        if not isinstance(subsets, list) or not subsets:
            problems.append(f"{_where(d, None)} has no [[datasets.subsets]]")
            continue
        for s, subset in enumerate(subsets):
            _check_keys(subset, d, s, problems, subset_level=True)
            merged = {**general, **{k: v for k, v in dataset.items() if k != "subsets"}, **subset}
            for key in _PROJECT_KEYS:
                if key in merged:
                    project_values.setdefault(key, {}).setdefault(_hashable(merged[key]), []).append(
                        _where(d, s))
            _plan_subset(plan, merged, d, s, base_dir, problems)
    for key, values in project_values.items():
        if len(values) > 1:
            shown = "; ".join(f"{v!r} in {', '.join(w)}" for v, w in values.items())
            problems.append(f"{key} differs between subsets ({shown}): a loradeck project has one value")
            continue
        (value, _), = values.items()
        table, name = _PROJECT_KEYS[key]
        converted = _convert(key, value, problems)
        if converted is not None:
            plan.settings.setdefault(table, {})[name] = converted
            shown = list(value) if isinstance(value, tuple) else value
            plan.notes.append(f"{key} = {shown!r} -> [{table}] {name}")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return plan


def _hashable(value):
    return tuple(value) if isinstance(value, list) else value


def _convert(key: str, value, problems: list[str]):
    if key == "resolution":
        try:
            return _resolution(list(value) if isinstance(value, tuple) else value)
        except ValueError as e:
            problems.append(str(e))
            return None
    return value


def _check_keys(table: dict, d: int | None, s: int | None, problems: list[str], *, subset_level=False) -> None:
    if not isinstance(table, dict):
        problems.append(f"{_where(d, s)} must be a table")
        return
    unknown = sorted(set(table) - _KNOWN)
    if unknown:
        problems.append(f"unknown key(s) in {_where(d, s)}: {', '.join(unknown)}")
    misplaced = sorted(k for k in _SUBSET_ONLY & set(table) if not subset_level)
    if misplaced:
        problems.append(f"{', '.join(misplaced)} belong(s) in [[datasets.subsets]], not {_where(d, s)}")
    for key, off in _OFF_ONLY.items():
        if key in table and table[key] not in off:
            problems.append(f"{key} = {table[key]!r} in {_where(d, s)} is not supported by loradeck"
                            f" (only {off[0]!r})")
    if "metadata_file" in table:
        problems.append(f"metadata_file in {_where(d, s)}: fine-tuning (JSON metadata) subsets are not supported;"
                        " use image_dir subsets with caption files, or a metadata.jsonl imagefolder")


def _plan_subset(plan: SourcePlan, merged: dict, d: int, s: int, base_dir: Path, problems: list[str]) -> None:
    raw = merged.get("image_dir")
    if not isinstance(raw, str) or not raw.strip():
        problems.append(f"{_where(d, s)} has no image_dir")
        return
    folder = Path(raw).expanduser()
    if not folder.is_absolute():  # kohya resolves against its working folder; the TOML's folder first
        folder = base_dir / folder if (base_dir / folder).is_dir() else Path.cwd() / folder
    if not folder.is_dir():
        problems.append(f"image_dir {raw!r} of {_where(d, s)} is not a folder")
        return
    repeats = merged.get("num_repeats", 1)
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        problems.append(f"num_repeats = {repeats!r} in {_where(d, s)} must be a whole number >= 1")
        return
    ext = merged.get("caption_extension") or KOHYA_DEFAULT_CAPTION_EXTENSION
    if not ext.startswith("."):
        ext = "." + ext
    class_tokens = merged.get("class_tokens")
    prefix, suffix = merged.get("caption_prefix") or "", merged.get("caption_suffix") or ""
    images = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p) and not p.name.startswith("."))
    without = 0
    for image in images:
        key = source_key(image)
        caption_file = image.with_name(image.stem + ext)
        text = None
        if caption_file.is_file():
            text = decode_caption(caption_file.read_bytes()) or None
        if text is None and class_tokens:
            text = class_tokens
        if text is None:
            without += 1
        elif prefix or suffix:  # kohya adds them at training time; here they become part of the caption
            text = apply_affixes(text, prefix.strip().rstrip(","), suffix.strip().lstrip(","))
        plan.captions[key] = text
        if repeats > 1:
            plan.repeats[key] = repeats
        plan.files.append(image)
    plan.notes.append(f"{folder}: {len(images)} image(s), {repeats} repeat(s), captions {ext}"
                      + (f", class_tokens {class_tokens!r} where no caption" if class_tokens else "")
                      + (f", {without} without a caption" if without else ""))


# ---------------------------------------------------------------- the import


def import_sources(project: Project, paths: Iterable[str | os.PathLike], *, caption_column: str | None = None,
                   on_progress=None, should_stop: Callable[[], bool] | None = None) -> ImportReport:
    """`loradeck import`: plain paths and dataset descriptions together, in one import."""
    plain, plans = [], []
    for path in paths:
        plan = plan_source(path, caption_column)
        (plans.append(plan) if plan else plain.append(path))
    if caption_column and not any(p.kind == "imagefolder" for p in plans):
        raise ConfigError("--caption-column applies to a metadata.jsonl / metadata.csv imagefolder,"
                          " and none was given")
    report = ImportReport()
    captions: dict[str, str | None] = {}
    repeats: dict[str, int] = {}
    files: list[str | os.PathLike] = list(plain)
    for plan in plans:
        for table, values in plan.settings.items():
            settings_mod.update(project.settings_file, table, values)
        report.notes += plan.notes
        report.refused += plan.refused
        captions.update(plan.captions)
        repeats.update(plan.repeats)
        files += plan.files
        for key, n in plan.repeats.items():
            report.repeat_folders.setdefault(str(Path(key).parent), n)
    return import_paths(project, files, on_progress=on_progress, should_stop=should_stop, captions=captions,
                        repeats=repeats, report=report)
