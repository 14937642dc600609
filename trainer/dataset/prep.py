"""Prep: turn originals/ into training images in dataset/, incrementally and in parallel.

For each original: EXIF orientation applied, any mode (CMYK, 16-bit, palette, alpha) made RGB with
alpha flattened onto [prep] background, downscaled (never upscaled) and centre-cropped to exactly
its bucket (loradeck.trainer.dataset.buckets), written atomically as dataset/<stem>.jpg (JPEG originals, quality 95)
or dataset/<stem>.png (everything else, so lossless sources stay lossless). Captions are never
touched.

Incremental: `.loradeck/prep.json` records, per stem, the original's size/mtime/sha256, the prep
settings key and the output; an original whose content and settings are unchanged is skipped (a
touched but identical file is re-hashed, not redone). A prepared image whose original was removed
is removed too (only images prep wrote itself; captions stay).

Speed: JPEGs are decoded in draft mode at the smallest DCT scale that still covers the bucket
(1/2, 1/4 or 1/8: 16x fewer pixels for a 3000x2000 photo going to 512 px), and originals are
processed in a process pool, one worker per core.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import fcntl
import hashlib
import io
import json
import multiprocessing
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image, ImageColor, ImageOps

from loradeck.trainer.atomic import atomic_open, atomic_write_text
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.dataset import buckets, image_probe
from loradeck.trainer.dataset.project import Project, is_image_file
from loradeck.trainer.errors import ConfigError, LoradeckError

MANIFEST_NAME = "prep.json"
# Bump when the image pipeline changes in a way that should redo every prepared image.
PIPELINE_VERSION = 1
JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 3
_JPEG_FORMATS = ("JPEG", "MPO")

# on_progress(done, total, item_name, problem_or_None)
ProgressFn = Callable[[int, int, str, "str | None"], None]


@dataclass
class PrepReport:
    resolution: int
    total: int = 0                     # originals considered
    prepared: list[str] = field(default_factory=list)   # output file names written this time
    skipped: int = 0                   # up to date, not redone
    failed: list[tuple[str, str]] = field(default_factory=list)  # (original name, one-line reason)
    removed: list[str] = field(default_factory=list)    # prepared images whose original is gone
    small: list[str] = field(default_factory=list)      # outputs that could not fill a standard bucket
    buckets: dict[str, int] = field(default_factory=dict)  # "WxH" -> images, over the whole dataset
    stopped: bool = False
    seconds: float = 0.0
    workers: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["failed"] = [list(x) for x in self.failed]
        return d


@dataclass(frozen=True)
class PrepSettings:
    spec: buckets.BucketSpec
    background: tuple[int, int, int]

    def key(self) -> str:
        bg = "".join(f"{c:02x}" for c in self.background)
        return f"v{PIPELINE_VERSION}-{self.spec.key()}-bg{bg}"


def load_settings(project: Project, resolution: int | None = None) -> PrepSettings:
    """The prep rules of a project ([prep] in project.toml), with an optional resolution override."""
    prep = settings_mod.load(project.settings_file).prep
    res = prep.resolution if resolution is None else resolution  # an explicit 0 is an error, not "default"
    if res < 8 or res % 8:
        raise ConfigError(f"resolution must be a multiple of 8 and at least 8, got {res}")
    try:
        background = ImageColor.getrgb(prep.background)[:3]
    except ValueError:
        raise ConfigError(f"[prep] background {prep.background!r} is not a colour (use e.g. '#ffffff')") from None
    spec = buckets.make_spec(res, bucket_step=prep.bucket_step, min_side=prep.bucket_min_side,
                             max_side=prep.bucket_max_side, square=prep.square_crop)
    return PrepSettings(spec, background)


def _remember_resolution(project: Project, resolution: int) -> None:
    """A dataset prepared at N is for training at N: keep N as [prep] resolution, so a later prep,
    `loradeck check` and a run's default resolution (loradeck.trainer.config.resolve) all agree with it."""
    if settings_mod.load(project.settings_file).prep.resolution != resolution:
        settings_mod.update(project.settings_file, "prep", {"resolution": resolution})


# ---------------------------------------------------------------- manifest


def manifest_path(project: Project) -> Path:
    return project.state / MANIFEST_NAME


def load_manifest(project: Project) -> dict[str, dict]:
    """stem -> entry; an unreadable manifest is treated as empty (everything is redone, nothing lost)."""
    try:
        data = json.loads(manifest_path(project).read_text(encoding="utf-8"))
        entries = data.get("entries", {})
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _save_manifest(project: Project, entries: dict[str, dict]) -> None:
    try:
        project.state.mkdir(parents=True, exist_ok=True)
        atomic_write_text(manifest_path(project),
                          json.dumps({"version": 1, "entries": entries}, ensure_ascii=False, indent=0))
    except OSError as e:  # prepared images are kept; without the manifest they are redone next time
        raise LoradeckError(f"could not save {manifest_path(project)}: {e.strerror or e}") from None


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------- one image (runs in a worker)


def _to_8bit_grey(im):
    """16-bit / 32-bit / float greyscale to 8-bit L, scaling rather than clipping."""
    import numpy as np  # numpy: only for 16-bit and float images

    arr = np.asarray(im).astype(np.float64)
    if im.mode == "F":
        top = 1.0 if arr.size and arr.max() <= 1.0 else 255.0
    elif im.mode.startswith("I;16") or (arr.size and arr.max() > 255):
        top = 65535.0
    else:
        top = 255.0
    out = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(out, "L")


def _apply_icc(im):
    """Convert to sRGB through the embedded ICC profile (CMYK, Display P3, Adobe RGB); best effort."""
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "CMYK", "L"):
        return im
    try:
        from PIL import ImageCms

        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if im.mode != "CMYK" and "srgb" in (ImageCms.getProfileDescription(src) or "").lower():
            return im
        return ImageCms.profileToProfile(im, src, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except Exception:  # a broken profile: fall back to Pillow's plain conversion
        return im


def to_rgb(im, background: tuple[int, int, int]):
    """Any Pillow image to RGB: 16-bit scaled, ICC applied, transparency flattened onto `background`."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _to_8bit_grey(im)
    im = _apply_icc(im)
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (*background, 255))
        flat.alpha_composite(rgba)
        return flat.convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def prepare_image(data: bytes, spec: buckets.BucketSpec, background: tuple[int, int, int]):
    """Decode `data` and return (RGB image of exactly its bucket's size, Fit, format)."""
    im = image_probe.open_image(data)
    orientation = image_probe.orientation_of(im)
    fmt = im.format
    upright = im.size[::-1] if orientation in (5, 6, 7, 8) else im.size
    try:
        fitted = buckets.fit(*upright, spec)
    except buckets.ImageTooSmall as e:
        raise image_probe.ImageRefused(str(e)) from None
    if fmt in _JPEG_FORMATS:
        want = fitted.resize_to[::-1] if orientation in (5, 6, 7, 8) else fitted.resize_to
        im.draft(None, want)  # DCT-domain downscale; the result still covers `want`
    try:
        im.load()
    except OSError as e:
        raise image_probe.ImageRefused(f"truncated or corrupt image data ({image_probe.short_reason(e)})") from None
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)  # animated GIF/WebP: the first frame
    if orientation != 1:
        im = ImageOps.exif_transpose(im)
    im = to_rgb(im, background)
    # Resize the (possibly drafted) image to the size that just covers the bucket, then crop.
    rw, rh = fitted.resize_to
    if im.size != (rw, rh):
        im = im.resize((rw, rh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    left, top = (rw - fitted.width) // 2, (rh - fitted.height) // 2
    if (rw, rh) != fitted.size:
        im = im.crop((left, top, left + fitted.width, top + fitted.height))
    return im, fitted, fmt


def upright_size(data: bytes) -> tuple[int, int]:
    """The (width, height) of an image as it is seen, EXIF rotation applied (header only)."""
    im = image_probe.open_image(data)
    return im.size[::-1] if image_probe.orientation_of(im) in (5, 6, 7, 8) else im.size


def _save(im, path: Path, fmt: str) -> None:
    with atomic_open(path, "wb") as fh:
        if fmt == "JPEG":
            im.save(fh, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=False)
        else:
            im.save(fh, "PNG", compress_level=PNG_COMPRESS_LEVEL)


def _prepare_job(job: dict) -> dict:
    """Worker entry point: one original in, one dataset image out. Never raises."""
    started = time.perf_counter()
    source = Path(job["source"])
    try:
        data = source.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        spec = buckets.BucketSpec(**job["spec"])
        im, fitted, fmt = prepare_image(data, spec, tuple(job["background"]))
        out_fmt = "JPEG" if fmt in _JPEG_FORMATS else "PNG"
        out = Path(job["dataset"]) / (job["stem"] + (".jpg" if out_fmt == "JPEG" else ".png"))
        _save(im, out, out_fmt)
        rw, rh = fitted.resize_to
        return {"ok": True, "stem": job["stem"], "sha256": sha, "output": out.name,
                "width": fitted.width, "height": fitted.height, "small": fitted.small,
                "original": list(upright_size(data)), "crop": [(rw - fitted.width) // 2, (rh - fitted.height) // 2],
                "seconds": time.perf_counter() - started}
    except image_probe.ImageRefused as e:
        return {"ok": False, "stem": job["stem"], "reason": str(e)}
    except LoradeckError as e:
        return {"ok": False, "stem": job["stem"], "reason": e.one_line()}
    except MemoryError:
        return {"ok": False, "stem": job["stem"], "reason": "out of memory while decoding"}
    except OSError as e:
        return {"ok": False, "stem": job["stem"], "reason": f"{e.strerror or e}"}
    except Exception as e:  # one bad file never stops the others
        return {"ok": False, "stem": job["stem"], "reason": f"{type(e).__name__}: {e}"[:200]}


def _worker_init() -> None:
    # The parent decides when to stop (Ctrl-C / SIGTERM, also when sent to the whole process group,
    # set its flag); workers finish their image. If the parent dies, their queue closes and they exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# ---------------------------------------------------------------- the project


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def list_originals(project: Project) -> list[Path]:
    """The image files in originals/ (hidden files skipped), sorted by name."""
    if not project.originals.is_dir():
        return []
    return sorted((p for p in project.originals.iterdir()
                   if p.is_file() and is_image_file(p) and not p.name.startswith(".")), key=lambda p: p.name)


def _up_to_date(entry: dict | None, src: Path, st: os.stat_result, key: str, dataset: Path) -> bool | None:
    """True: skip. False: redo. None: stat changed, the content hash decides."""
    if not entry or entry.get("settings") != key or entry.get("source") != src.name:
        return False
    if not (dataset / entry.get("output", "")).is_file():
        return False
    if entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
        return True
    return None


def prep_project(project: Project, *, resolution: int | None = None, workers: int | None = None,
                 on_progress: ProgressFn | None = None, should_stop: Callable[[], bool] | None = None,
                 force: bool = False) -> PrepReport:
    """Prepare every original of `project` into dataset/; returns what was done.

    `on_progress(done, total, name, problem)` is called in this process once with done=0 when the
    work is known, then after each image (total = images to process, skipped ones excluded).
    `should_stop()` is polled; when it turns true no new image is started, the ones in flight
    finish, and the report says `stopped`. `force` redoes all.
    """
    with _exclusive(project):
        return _prep_locked(project, resolution, workers, on_progress, should_stop, force)


@contextlib.contextmanager
def _exclusive(project: Project):
    """One prep at a time per project (the TUI and a CLI run would fight over the manifest)."""
    project.state.mkdir(parents=True, exist_ok=True)
    with open(project.state / "prep.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise LoradeckError(f"prep is already running for {project.name}",
                                hint="wait for it to finish, or stop it") from None
        yield


def _prep_locked(project, resolution, workers, on_progress, should_stop, force) -> PrepReport:
    started = time.perf_counter()
    prep = load_settings(project, resolution)
    _remember_resolution(project, prep.spec.resolution)
    key = prep.key()
    project.dataset.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(project)
    report = PrepReport(resolution=prep.spec.resolution)
    originals = list_originals(project)
    report.total = len(originals)
    stems = {p.stem for p in originals}

    # Outputs whose original is gone: remove the image prep wrote (never a caption).
    for stem in sorted(set(manifest) - stems):
        entry = manifest.pop(stem)
        out = project.dataset / entry.get("output", "")
        if entry.get("output") and out.is_file():
            out.unlink()
            report.removed.append(out.name)

    jobs, seen_stems = [], set()
    for src in originals:
        if src.stem in seen_stems:  # only possible for files put into originals/ by hand
            report.failed.append((src.name, f"another original has the stem {src.stem!r}; rename one"))
            continue
        seen_stems.add(src.stem)
        st = src.stat()
        entry = manifest.get(src.stem)
        verdict = False if force else _up_to_date(entry, src, st, key, project.dataset)
        if verdict is None and _sha256_file(src) == entry.get("sha256"):
            entry.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
            verdict = True
        if verdict:
            report.skipped += 1
            continue
        jobs.append({"source": str(src), "stem": src.stem, "dataset": str(project.dataset),
                     "spec": asdict(prep.spec), "background": list(prep.background),
                     "size": st.st_size, "mtime_ns": st.st_mtime_ns})

    if on_progress:
        on_progress(0, len(jobs), "", None)  # the start: how much work there is
    n_workers = max(1, min(workers or default_workers(), len(jobs) or 1))
    report.workers = n_workers
    done = 0
    last_save = time.monotonic()

    def record(job: dict, result: dict) -> None:
        nonlocal done, last_save
        done += 1
        name = Path(job["source"]).name
        old = manifest.get(job["stem"])
        if result["ok"]:
            if old and old.get("output") and old["output"] != result["output"]:
                stale = project.dataset / old["output"]
                if stale.is_file():
                    stale.unlink()
            manifest[job["stem"]] = {
                "source": name, "size": job["size"], "mtime_ns": job["mtime_ns"],
                "sha256": result["sha256"], "settings": key, "output": result["output"],
                "width": result["width"], "height": result["height"], "small": result["small"],
                # SDXL micro-conditioning: the original's upright size and the centre crop's top-left
                # (in the resized image), (x, y) pairs.
                "original": result["original"], "crop": result["crop"]}
            report.prepared.append(result["output"])
            problem = None
        else:
            report.failed.append((name, result["reason"]))
            problem = result["reason"]
        if on_progress:
            on_progress(done, len(jobs), name, problem)
        if time.monotonic() - last_save > 5:
            _save_manifest(project, manifest)
            last_save = time.monotonic()

    def stop_requested() -> bool:
        return bool(should_stop and should_stop())

    try:
        if n_workers == 1 or len(jobs) < 3:
            for job in jobs:
                if stop_requested():
                    report.stopped = True
                    break
                record(job, _prepare_job(job))
        else:
            _run_pool(jobs, n_workers, record, stop_requested, report)
    finally:
        _save_manifest(project, manifest)

    for entry in manifest.values():
        if (project.dataset / entry.get("output", "")).is_file():
            label = buckets.label((entry["width"], entry["height"]))
            report.buckets[label] = report.buckets.get(label, 0) + 1
            if entry.get("small"):
                report.small.append(entry["output"])
    report.buckets = dict(sorted(report.buckets.items(), key=lambda kv: (-kv[1], kv[0])))
    report.small.sort()
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _run_pool(jobs, n_workers, record, stop_requested, report) -> None:
    ctx = multiprocessing.get_context(_start_method())
    pool = cf.ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx, initializer=_worker_init)
    futures = {}
    try:
        futures = {pool.submit(_prepare_job, job): job for job in jobs}
        pending = set(futures)
        while pending:
            if stop_requested():
                report.stopped = True
                for f in pending:
                    f.cancel()
                pending = {f for f in pending if not f.cancelled()}
                # In-flight images finish and are kept.
                for f in cf.as_completed(pending):
                    record(futures[f], _result_of(f, futures[f]))
                break
            finished, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
            for f in sorted(finished, key=lambda f: futures[f]["stem"]):
                record(futures[f], _result_of(f, futures[f]))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _start_method() -> str | None:
    """fork where it is safe (no other threads: the CLI), forkserver in a threaded caller."""
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else None


def _result_of(future: cf.Future, job: dict) -> dict:
    try:
        return future.result()
    except Exception as e:  # the worker process died (killed, out of memory)
        return {"ok": False, "stem": job["stem"], "reason": f"worker failed: {type(e).__name__}: {e}"[:200]}
