"""WD14 tagging throughput: loradeck's batched engine vs tagging one image at a time.

    python bench/bench_tagger.py [--images 48] [--batch-size 8] [--repeats 3] [--size 448] [--channels 32]
                                 [--tags 10000] [--image-side 768] [--device auto] [--threads 0]

The model is a random WD14-format tagger (loradeck.trainer.captions.wd14_synthetic: the real NHWC 448 px BGR input, a
three-layer strided conv stack of `--channels`, global pool, `--tags` sigmoid outputs, a
selected_tags.csv), so onnxruntime does real per-image work. The baseline is the loop people write
first (and kohya's tagger with batch size 1): for each image, decode + pad + resize, run the model on
a batch of one, pick tags, write the caption. The engine run is `tag_project` with `--batch-size`
(batched inference, decoding on a thread pool while the model runs). Both use the same loaded session,
images, thresholds and caption store; runs alternate (baseline, engine, ...) so machine load hits both
alike; the median of `--repeats` is reported as images/s and tags/s. Prints one JSON line;
docs/benchmarks.md records the results.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loradeck.trainer.captions.blip_captioning import apply_affixes  # noqa: E402
from loradeck.trainer.captions.tag_policy import TagRules, select_tags  # noqa: E402
from loradeck.trainer.captions.wd14_synthetic import write_tagger  # noqa: E402
from loradeck.trainer.captions.wd14_tagger import load_tagger, prepare_image  # noqa: E402
from loradeck.trainer.captions.wd14_tagging import TagOptions, tag_project  # noqa: E402
from loradeck.trainer.dataset import caption_store  # noqa: E402
from loradeck.trainer.dataset.project import create_project, dataset_images  # noqa: E402


def _labels(n: int) -> list[tuple[str, int]]:
    ratings = [("general", 9), ("sensitive", 9), ("questionable", 9), ("explicit", 9)]
    chars = [(f"character_{i}", 4) for i in range(max(1, n // 20))]
    return ratings + [(f"tag_{i}", 0) for i in range(n - len(ratings) - len(chars))] + chars


def _images(folder: Path, n: int, side: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        w, h = (side, side * 3 // 4) if i % 2 else (side * 3 // 4, side)
        arr = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        im = Image.fromarray(arr).resize((w, h), Image.Resampling.BILINEAR)  # smooth, JPEG-friendly
        im.save(folder / f"img_{i:03d}.{'jpg' if i % 2 else 'png'}", quality=90)


def _clear(project) -> None:
    for p in project.dataset.glob("*.txt"):
        p.unlink()


def one_at_a_time(project, tagger, rules: TagRules) -> tuple[float, int]:
    start, tags = time.perf_counter(), 0
    for image in dataset_images(project):
        x = prepare_image(image, tagger.size)
        chosen = select_tags(tagger.predict(x[None])[0], tagger.labels, rules)
        tags += len(chosen)
        caption_store.write_caption(image, apply_affixes(", ".join(chosen)))
    return time.perf_counter() - start, tags


def batched(project, tagger, batch_size: int) -> tuple[float, int]:
    start = time.perf_counter()
    report = tag_project(project, TagOptions(batch_size=batch_size), tagger=tagger)
    seconds = time.perf_counter() - start
    assert len(report.captioned) == len(dataset_images(project)), report.failed
    tags = sum(len(caption_store.split_tags(c["after"])) for c in report.changes)
    return seconds, tags


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=448)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--tags", type=int, default=10000)
    ap.add_argument("--image-side", type=int, default=768)
    ap.add_argument("--tag-weight", type=float, default=0.22, help="std of the random tag-layer weights")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # Small tag weights and a negative bias leave a few dozen tags above the 0.35 threshold per
        # image, as a real tagger writes (the count is in the output: tags_written).
        rng = np.random.default_rng(0)
        model = write_tagger(tmp / "model", _labels(args.tags), size=args.size, channels=args.channels,
                             weight=rng.normal(0, args.tag_weight, (args.channels, args.tags)),
                             bias=np.full(args.tags, -3.0))
        project = create_project("bench", tmp / "projects")
        _images(project.dataset, args.images, args.image_side)
        tagger = load_tagger(str(model), device=args.device, threads=args.threads)
        rules = TagRules()
        one_at_a_time(project, tagger, rules)  # warm-up: session allocations, file cache
        _clear(project)
        one, eng, tags_one, tags_eng = [], [], 0, 0
        for _ in range(args.repeats):
            s, tags_one = one_at_a_time(project, tagger, rules)
            one.append(s)
            _clear(project)
            s, tags_eng = batched(project, tagger, args.batch_size)
            eng.append(s)
            _clear(project)
        assert tags_one == tags_eng, (tags_one, tags_eng)  # the same tags either way
        t_one, t_eng = statistics.median(one), statistics.median(eng)
        print(json.dumps({
            "images": args.images, "batch_size": args.batch_size, "model_size": args.size,
            "channels": args.channels, "tags_in_model": args.tags, "provider": tagger.provider,
            "tags_written": tags_eng,
            "one_at_a_time": {"seconds": round(t_one, 3), "images_per_sec": round(args.images / t_one, 2),
                              "tags_per_sec": round(tags_one / t_one, 1)},
            "batched": {"seconds": round(t_eng, 3), "images_per_sec": round(args.images / t_eng, 2),
                        "tags_per_sec": round(tags_eng / t_eng, 1)},
            "speedup": round(t_one / t_eng, 2), "repeats": args.repeats}))


if __name__ == "__main__":
    main()
