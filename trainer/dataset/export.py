"""Writing a project's dataset back out in the formats other tools read.

    export_dataset(project, dest, "imagefolder" | "kohya") -> {"path", "format", "images", "captioned", ...}

- imagefolder: DEST/<image> for every original (byte-identical) and DEST/metadata.jsonl with
  {"file_name", "text"} rows (the caption from dataset/<stem><ext>; "" when there is none). A Hugging
  Face `load_dataset("imagefolder", data_dir=DEST)` reads it, and `loradeck import` reads it back.
- kohya: DEST/<N>_<name>/ per repeat count N (loradeck.trainer.dataset.repeat_folders; 1 when none), each image with its
  `<stem>.txt` caption, and DEST/dataset.toml, a kohya dataset config naming those folders with their
  num_repeats, the caption extension, and the project's resolution, keep_tokens and shuffle_caption.

Originals are exported, not the prepared images: they are what another tool (or loradeck) prepares
from. DEST must not exist or be empty; the export is built in a hidden sibling folder and renamed
into place, so a failed export leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.dataset import caption_store, repeat_folders
from loradeck.trainer.dataset.project import Project, is_image_file
from loradeck.trainer.errors import LoradeckError

FORMATS = ("imagefolder", "kohya")
KOHYA_CONFIG = "dataset.toml"


def _originals(project: Project) -> list[Path]:
    if not project.originals.is_dir():
        return []
    return sorted((p for p in project.originals.iterdir()
                   if p.is_file() and is_image_file(p) and not p.name.startswith(".")), key=lambda p: p.name)


def _caption(project: Project, original: Path, ext: str) -> str | None:
    return caption_store.read_caption(project.dataset / original.name, ext) or None


def _folder_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("._") or "images"


def export_dataset(project: Project, dest: str | os.PathLike, fmt: str) -> dict:
    if fmt not in FORMATS:
        raise LoradeckError(f"unknown export format {fmt!r} (use {', '.join(FORMATS)})")
    dest = Path(dest).expanduser()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise LoradeckError(f"{dest} exists and is not an empty folder", hint="name a new folder with --to")
    originals = _originals(project)
    if not originals:
        raise LoradeckError(f"{project.name} has no images to export", hint=command("import", project.name, "PATH"))
    cfg = settings_mod.load(project.settings_file)
    ext = cfg.caption_extension
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        if fmt == "imagefolder":
            summary = _write_imagefolder(project, originals, ext, staging)
        else:
            summary = _write_kohya(project, originals, ext, cfg, staging, dest)
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        staging.rename(dest)
    except OSError as e:
        raise LoradeckError(f"cannot write the export to {dest}: {e.strerror or e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"path": str(dest), "format": fmt, "images": len(originals), **summary}


def _copy(src: Path, dst: Path) -> None:
    shutil.copy2(src, dst)  # byte-identical, with its date


def _write_imagefolder(project: Project, originals: list[Path], ext: str, out: Path) -> dict:
    lines, captioned = [], 0
    for original in originals:
        _copy(original, out / original.name)
        text = _caption(project, original, ext)
        captioned += bool(text)
        lines.append(json.dumps({"file_name": original.name, "text": text or ""}, ensure_ascii=False))
    (out / "metadata.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return {"captioned": captioned, "metadata": str(Path("metadata.jsonl"))}


def _write_kohya(project: Project, originals: list[Path], ext: str, cfg, out: Path, final: Path) -> dict:
    counts = repeat_folders.image_repeats(project)
    name = _folder_name(cfg.project.trigger_word or project.name)
    groups: dict[int, list[Path]] = {}
    for original in originals:
        groups.setdefault(int(counts.get(original.stem, 1)), []).append(original)
    captioned = 0
    subsets = []
    for n in sorted(groups):
        folder = out / f"{n}_{name}"
        folder.mkdir()
        for original in groups[n]:
            _copy(original, folder / original.name)
            text = _caption(project, original, ext)
            if text:
                captioned += 1
                (folder / (original.stem + ".txt")).write_text(text + "\n", encoding="utf-8")
        subsets.append((folder.name, n, len(groups[n])))
    train = cfg.train
    general = [f"caption_extension = {json.dumps('.txt')}",
               f"shuffle_caption = {'true' if train.get('shuffle_caption') else 'false'}",
               f"keep_tokens = {int(train.get('keep_tokens', 0))}"]
    lines = ["# kohya sd-scripts dataset config written by `loradeck captions export --format kohya`.",
             f"# image_dir paths are absolute: {final}", "", "[general]", *general, "",
             "[[datasets]]", f"resolution = {cfg.prep.resolution}", "enable_bucket = true",
             f"min_bucket_reso = {cfg.prep.bucket_min_side}", f"max_bucket_reso = {cfg.prep.bucket_max_side}",
             f"bucket_reso_steps = {cfg.prep.bucket_step}"]
    if "batch_size" in train:
        lines.append(f"batch_size = {int(train['batch_size'])}")
    for folder, n, _count in subsets:
        lines += ["", "  [[datasets.subsets]]", f"  image_dir = {json.dumps(str(final / folder))}",
                  f"  num_repeats = {n}"]
    (out / KOHYA_CONFIG).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return {"captioned": captioned, "config": KOHYA_CONFIG,
            "folders": {folder: {"repeats": n, "images": count} for folder, n, count in subsets}}
