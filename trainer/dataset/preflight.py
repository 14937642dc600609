"""Preflight: what is wrong with a project's dataset before a run is started (`loradeck check`).

`check(project, config)` returns a JSON-ready dict: counts, the bucket histogram, the steps a run
will take, and `problems`, each {"level": "error"|"warning"|"info", "code", "message", "count", "items"}. Errors
are what would make training fail or silently train the wrong thing (no images, captions in an
extension training ignores, image sides the VAE cannot take); warnings are worth a look. Reads
headers only (no full decode) and hashes only the small prepared images, so it is quick enough
for the TUI to call from a worker thread.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.dataset import buckets, caption_ops, image_probe, prep
from loradeck.trainer.dataset.project import Project, dataset_images
from loradeck.trainer.dataset.repeat_folders import image_repeats
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.train import optional_packages, step_count
from loradeck.trainer.train.data import add_trigger  # the trainer's own rule, so the two agree

# An image below this share of resolution² trains at a lower resolution than asked for.
SMALL_AREA_SHARE = 0.75
MAX_LISTED = 50  # items listed per problem (the count is always exact)


PACKAGE_CODE = "package"  # a knob whose optional package is missing (loradeck.trainer.train.optional_packages)


def _problem(level: str, code: str, message: str, items: list | None = None) -> dict:
    items = items or []
    return {"level": level, "code": code, "message": message, "count": len(items),
            "items": items[:MAX_LISTED]}


def _load_config(project: Project, config):
    """The config a run of this project would get (loradeck.trainer.config.resolve: defaults < project.toml)."""
    return config if config is not None else run_config.resolve(project).config


def _image_sizes(images: list[Path]) -> tuple[dict[str, tuple[int, int]], list[dict]]:
    sizes, unreadable = {}, []
    for path in images:
        try:
            with image_probe.open_image(path) as im:
                sizes[path.name] = im.size
        except image_probe.ImageRefused as e:
            unreadable.append({"image": path.name, "reason": str(e)})
    return sizes, unreadable


def _duplicates(project: Project, images: list[Path]) -> list[list[str]]:
    groups: dict[str, list[str]] = {}
    for path in images:
        try:
            groups.setdefault(hashlib.sha256(path.read_bytes()).hexdigest(), []).append(path.name)
        except OSError:
            continue
    # Originals with equal content (copied in by hand), from the hashes prep recorded.
    by_sha: dict[str, list[str]] = {}
    for entry in prep.load_manifest(project).values():
        if entry.get("sha256"):
            by_sha.setdefault(entry["sha256"], []).append(f"originals/{entry.get('source')}")
    found = [sorted(g) for g in groups.values() if len(g) > 1]
    found += [sorted(g) for g in by_sha.values() if len(g) > 1]
    return found


def _unprepared(project: Project, resolution: int) -> tuple[list[str], list[str]]:
    """(originals with no prepared image, originals prepared with other settings)."""
    manifest = prep.load_manifest(project)
    try:
        key = prep.load_settings(project, resolution).key()
    except LoradeckError:
        key = None
    missing, stale = [], []
    for src in prep.list_originals(project):
        entry = manifest.get(src.stem)
        if not entry or not (project.dataset / entry.get("output", "")).is_file():
            missing.append(src.name)
        elif key and entry.get("settings") != key:
            stale.append(src.name)
    return missing, stale


def check(project: Project, config=None) -> dict:
    """The preflight report of `project` for a run with `config` (a TrainConfig; default: the
    project's [train] settings)."""
    problems: list[dict] = []
    proj_settings = settings.load(project.settings_file)
    try:
        cfg = _load_config(project, config)
    except LoradeckError as e:
        problems.append(_problem("error", "config", e.one_line()))
        cfg = TrainConfig()
    res = cfg.resolution
    images = dataset_images(project)
    sizes, unreadable = _image_sizes(images)
    statuses = caption_ops.list_captions(project, proj_settings.caption_extension)
    ext = proj_settings.caption_extension

    originals = prep.list_originals(project)
    if not images:
        hint = "run: " + (command("prep", project.name) if originals else command("import", project.name, "FOLDER"))
        problems.append(_problem("error", "no_images", f"the dataset has no images ({hint})"))
    if unreadable:
        problems.append(_problem("error", "unreadable", f"{len(unreadable)} dataset image(s) cannot be read",
                                 unreadable))
    ignored = [{"image": s.image, "files": s.ignored} for s in statuses if s.status == caption_ops.IGNORED_EXTENSION]
    if ignored:
        problems.append(_problem(
            "error", "ignored_extension",
            f"{len(ignored)} image(s) have captions only in a file training ignores"
            f" (the project reads {ext}; set [project] caption_extension or rename the files)", ignored))
    both = [{"image": s.image, "files": s.ignored} for s in statuses
            if s.status == caption_ops.CAPTIONED and s.ignored]
    if both:
        problems.append(_problem("warning", "extra_caption_files",
                                 f"{len(both)} image(s) also have a caption file training ignores", both))
    missing = [s.image for s in statuses if s.status in (caption_ops.MISSING, caption_ops.EMPTY)]
    if missing:
        problems.append(_problem("warning", "uncaptioned", f"{len(missing)} image(s) have no caption"
                                 f" (they train on an empty prompt; try: {command('caption', project.name)})", missing))
    orphans = caption_ops.orphan_captions(project)
    if orphans:
        problems.append(_problem("warning", "orphan_captions", f"{len(orphans)} caption file(s) have no image",
                                 orphans))
    trigger = proj_settings.project.trigger_word.strip()
    if trigger:
        lacking = [s.image for s in statuses if s.text and add_trigger(s.text, trigger) != s.text]
        if lacking:
            problems.append(_problem("info", "trigger_missing",
                                     f"{len(lacking)} caption(s) lack the trigger word {trigger!r}; training"
                                     " prepends it (to write it into the files:"
                                     f" {command('captions', 'trigger', project.name)})", lacking))

    bad_sides = [{"image": n, "width": w, "height": h} for n, (w, h) in sizes.items() if w % 8 or h % 8]
    if bad_sides:
        problems.append(_problem("error", "bad_size", f"{len(bad_sides)} image(s) have a side that is not a"
                                 " multiple of 8 (the VAE needs it; re-run loradeck prep)", bad_sides))
    small = [{"image": n, "width": w, "height": h} for n, (w, h) in sizes.items()
             if w * h < SMALL_AREA_SHARE * res * res]
    if small:
        problems.append(_problem("warning", "small_images",
                                 f"{len(small)} image(s) are smaller than the {res} px resolution"
                                 " (prep never upscales; they train at their own size)", small))
    large = [{"image": n, "width": w, "height": h} for n, (w, h) in sizes.items() if w * h > res * res]
    if large:
        problems.append(_problem("warning", "large_images",
                                 f"{len(large)} image(s) are larger than the {res} px resolution"
                                 " (prepared for another resolution? run:"
                                 f" {command('prep', project.name, '--resolution', res)})", large))
    not_prepared, stale = _unprepared(project, res)
    if not_prepared:
        problems.append(_problem("warning", "unprepared", f"{len(not_prepared)} original(s) are not in the"
                                 f" dataset yet (run: {command('prep', project.name)})", not_prepared))
    if stale:
        problems.append(_problem("warning", "stale_prep", f"{len(stale)} image(s) were prepared with other"
                                 f" settings (run: {command('prep', project.name, '--resolution', res)})", stale))
    dups = _duplicates(project, images)
    if dups:
        problems.append(_problem("warning", "duplicates", f"{len(dups)} group(s) of identical images", dups))

    histogram: dict[str, int] = {}
    for size in sizes.values():
        histogram[buckets.label(size)] = histogram.get(buckets.label(size), 0) + 1
    histogram = dict(sorted(histogram.items(), key=lambda kv: (-kv[1], kv[0])))
    batch = cfg.batch_size
    thin = [b for b, n in histogram.items() if n < batch]
    if thin and batch > 1:
        problems.append(_problem("warning", "thin_buckets",
                                 f"{len(thin)} bucket(s) hold fewer images than the batch size {batch}"
                                 " (their batches are smaller)", thin))

    for message in optional_packages.problems_for(cfg):  # e.g. adamw8bit without bitsandbytes
        problems.append(_problem("error", PACKAGE_CODE, message))
    for message in optional_packages.warnings_for(cfg):  # e.g. xformers missing: sdpa instead
        problems.append(_problem("warning", PACKAGE_CODE, message))

    n = len(sizes)
    count = step_count.count(cfg, sizes, image_repeats(project))
    steps = {"images": n, "folder_weighted_images": count.weighted_images, "repeats": cfg.repeats,
             "epochs": cfg.max_train_epochs, "max_train_steps": cfg.max_train_steps, "batch_size": cfg.batch_size,
             "effective_batch": cfg.effective_batch(), "steps_per_epoch": count.steps_per_epoch,
             "total_steps": count.total_steps if n else 0}
    errors = sum(p["level"] == "error" for p in problems)
    warnings = sum(p["level"] == "warning" for p in problems)
    return {
        "ok": errors == 0, "project": project.name, "resolution": res,
        "originals": len(originals), "images": n,
        "captioned": sum(s.status == caption_ops.CAPTIONED for s in statuses),
        "caption_extension": ext, "buckets": histogram, "steps": steps,
        "errors": errors, "warnings": warnings, "problems": problems,
    }


def render(report: dict) -> str:
    """The report as text for a terminal."""
    s = report["steps"]
    lines = [f"{report['project']}: {report['images']} images ({report['originals']} originals),"
             f" {report['captioned']} captioned ({report['caption_extension']}), resolution {report['resolution']}"]
    if report["buckets"]:
        lines.append("buckets: " + ", ".join(f"{b} x{n}" for b, n in report["buckets"].items()))
    images = f"{s['images']} images"
    if s.get("folder_weighted_images", s["images"]) != s["images"]:
        images += f" ({s['folder_weighted_images']} with kohya folder repeats)"
    how = (f"{s['max_train_steps']} steps (fixed)" if s["max_train_steps"] else
           f"{images} x {s['repeats']} repeats x {s['epochs']} epochs / batch {s['effective_batch']}")
    if not s["max_train_steps"] and s["batch_size"] > 1 and len(report["buckets"]) > 1:
        how += f", batched per bucket ({len(report['buckets'])} buckets, each may end in a partial batch)"
    lines.append(f"steps: {s['total_steps']} = {how}")
    for p in report["problems"]:
        lines.append(f"{p['level']}: {p['message']}")
        for item in p["items"][:5]:
            lines.append(f"    {item if isinstance(item, str) else _item_text(item)}")
        if p["count"] > 5:
            lines.append(f"    ... and {p['count'] - 5} more")
    verdict = "ok" if report["ok"] else "not ready"
    lines.append(f"{verdict}: {report['errors']} error(s), {report['warnings']} warning(s)")
    return "\n".join(lines)


def _item_text(item) -> str:
    if isinstance(item, dict):
        return " ".join(f"{k}={v}" for k, v in item.items())
    if isinstance(item, list):
        return " = ".join(map(str, item))
    return str(item)
