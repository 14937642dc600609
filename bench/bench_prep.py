"""Benchmark: `loradeck prep` against a naive single-process Pillow loop, back to back.

    python bench/bench_prep.py [--images 200] [--size 3000x2000] [--resolution 512] [--rounds 2]
                               [--workers N] [--only naive|loradeck]

Photo-like JPEGs (smooth colour fields, soft edges, sensor-like noise; some with EXIF orientation
6) are generated once into bench/cache/prep-photos-<N>-<WxH>/ and reused. Each round times the naive
loop (open, exif_transpose, convert RGB, resize LANCZOS to the same bucket, crop, save) and then
`loradeck.trainer.dataset.prep.prep_project` on a fresh project holding the same originals; both write the same
bucket sizes with the same JPEG settings. Prints one JSON line with the medians, the speed-up, and
the PSNR of prep's draft-mode decode against a full decode (quality check: > 40 dB is invisible).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loradeck.trainer.dataset import buckets, prep  # noqa: E402
from loradeck.trainer.dataset.project import create_project  # noqa: E402

CACHE = Path(__file__).resolve().parent / "cache"


def make_photo(args: tuple[Path, int, int, int]) -> None:
    """One photo-like JPEG: a smooth random colour field plus detail and noise, quality 90."""
    import numpy as np
    from PIL import Image

    path, width, height, seed = args
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    field = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    mid = Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).resize(
        (width, height), Image.Resampling.BICUBIC)
    arr = np.asarray(field, dtype=np.int16) * 3 // 4 + np.asarray(mid, dtype=np.int16) // 4
    arr += rng.normal(0, 5, (height, width, 1)).astype(np.int16)  # luminance grain
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    exif = Image.Exif()
    if seed % 4 == 0:
        exif[0x0112] = 6  # a portrait shot stored sideways, as phones do
    img.save(path, "JPEG", quality=90, exif=exif.tobytes())


def photo_set(n: int, width: int, height: int) -> list[Path]:
    folder = CACHE / f"prep-photos-{n}-{width}x{height}"
    paths = [folder / f"photo_{i:04d}.jpg" for i in range(n)]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        folder.mkdir(parents=True, exist_ok=True)
        print(f"generating {len(missing)} photos in {folder} ...", file=sys.stderr)
        with ProcessPoolExecutor() as pool:
            list(pool.map(make_photo, [(p, width, height, paths.index(p)) for p in missing]))
    return paths


def naive_prep(paths: list[Path], out: Path, resolution: int) -> None:
    """What a first script does: one process, full decode, one image after another."""
    from PIL import Image, ImageOps

    spec = buckets.make_spec(resolution)
    for path in paths:
        im = Image.open(path)
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        fitted = buckets.fit(*im.size, spec)
        im = im.resize(fitted.resize_to, Image.Resampling.LANCZOS)
        rw, rh = fitted.resize_to
        left, top = (rw - fitted.width) // 2, (rh - fitted.height) // 2
        im = im.crop((left, top, left + fitted.width, top + fitted.height))
        im.save(out / (path.stem + ".jpg"), "JPEG", quality=prep.JPEG_QUALITY, subsampling=0)


def timed_naive(paths, resolution) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="bench-naive-") as tmp:
        t = time.perf_counter()
        naive_prep(paths, Path(tmp), resolution)
        seconds = time.perf_counter() - t
        sizes = {p.stem: _size(p) for p in Path(tmp).iterdir()}
    return seconds, sizes


def timed_loradeck(paths, resolution, workers) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="bench-prep-") as tmp:
        project = create_project("bench", tmp)
        for p in paths:  # setup, not timed: the originals an import would have written
            os.link(p, project.originals / p.name) if _same_fs(p, project.originals) else shutil.copy2(
                p, project.originals / p.name)
        t = time.perf_counter()
        report = prep.prep_project(project, resolution=resolution, workers=workers)
        seconds = time.perf_counter() - t
        if report.failed or len(report.prepared) != len(paths):
            raise SystemExit(f"prep failed: {report.failed[:3]}")
        sizes = {p.stem: _size(p) for p in project.dataset.iterdir() if p.suffix == ".jpg"}
    return seconds, sizes


def draft_psnr(paths: list[Path], resolution: int) -> float:
    """PSNR (dB) of prep's draft-mode output against a full decode + LANCZOS, over a few photos."""
    import numpy as np
    from PIL import Image, ImageOps

    spec, total = buckets.make_spec(resolution), 0.0
    sample = paths[:4]
    for path in sample:
        ours, fitted, _ = prep.prepare_image(path.read_bytes(), spec, (255, 255, 255))
        full = ImageOps.exif_transpose(Image.open(path)).convert("RGB").resize(fitted.resize_to,
                                                                               Image.Resampling.LANCZOS)
        rw, rh = fitted.resize_to
        left, top = (rw - fitted.width) // 2, (rh - fitted.height) // 2
        ref = full.crop((left, top, left + fitted.width, top + fitted.height))
        mse = float(((np.asarray(ours, float) - np.asarray(ref, float)) ** 2).mean())
        total += 10 * np.log10(255 ** 2 / max(mse, 1e-9))
    return total / len(sample)


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--size", default="3000x2000")
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--only", choices=("naive", "loradeck"),
                    help="run one pipeline only (to time whole processes from outside)")
    args = ap.parse_args()
    width, height = (int(x) for x in args.size.split("x"))
    paths = photo_set(args.images, width, height)
    if args.only:
        run = timed_naive if args.only == "naive" else lambda p, r: timed_loradeck(p, r, args.workers)
        seconds = [run(paths, args.resolution)[0] for _ in range(args.rounds)]
        print(json.dumps({"pipeline": args.only, "images": len(paths), "seconds": [round(x, 2) for x in seconds]}))
        return
    naive_times, ours_times = [], []
    for r in range(args.rounds):
        t_naive, sizes_naive = timed_naive(paths, args.resolution)
        t_ours, sizes_ours = timed_loradeck(paths, args.resolution, args.workers)
        if sizes_naive != sizes_ours:
            raise SystemExit("the two pipelines produced different bucket sizes")
        naive_times.append(t_naive)
        ours_times.append(t_ours)
        print(f"round {r + 1}: naive {t_naive:.2f}s  loradeck {t_ours:.2f}s  ({t_naive / t_ours:.2f}x)",
              file=sys.stderr)
    naive, ours = statistics.median(naive_times), statistics.median(ours_times)
    mb = sum(p.stat().st_size for p in paths) / 1e6
    print(json.dumps({
        "images": len(paths), "size": args.size, "resolution": args.resolution, "input_mb": round(mb, 1),
        "cpus": prep.default_workers(), "rounds": args.rounds,
        "naive_s": round(naive, 2), "loradeck_s": round(ours, 2), "speedup": round(naive / ours, 2),
        "naive_runs": [round(x, 2) for x in naive_times], "loradeck_runs": [round(x, 2) for x in ours_times],
        "draft_psnr_db": round(draft_psnr(paths, args.resolution), 1),
    }))


if __name__ == "__main__":
    main()
