"""Captioning throughput: loradeck's batched engine vs captioning one image at a time.

    python bench/bench_caption.py [--images 64] [--batch-size 8] [--repeats 3] [--model synthetic:blip-tiny]
                                  [--beams 3] [--max-length 75] [--size 512] [--device auto]
                                  [--mode both|one|batched]

The baseline is the plain loop people write first (and kohya's make_captions with batch size 1):
for each image, decode, preprocess, generate, write, back to back. The engine run is
`caption_project` with `--batch-size` (batched generation, decoding on a thread pool ahead of the
model). Both use the same loaded model, images, decoding settings and caption store; runs
alternate (baseline, engine, baseline, ...) so machine load hits both alike, and the median of
`--repeats` is reported. Prints one JSON line; docs/benchmarks.md records the results.
`--mode one` / `--mode batched` run only that side (once per repeat, no warm-up), for timing the
two as whole processes from outside.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loradeck.trainer.captions.blip_captioning import CaptionOptions, _generation_kwargs, caption_project, clean_caption  # noqa: E402
from loradeck.trainer.captions.blip_model import load_captioner  # noqa: E402
from loradeck.trainer.dataset import caption_store  # noqa: E402
from loradeck.trainer.dataset.project import create_project, dataset_images  # noqa: E402


def make_images(folder: Path, n: int, size: int) -> None:
    """`n` photo-sized pictures with some structure (JPEG and PNG), so decoding costs what it does."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        im = Image.fromarray(base).resize((size, size), Image.BICUBIC)
        im.save(folder / f"img_{i:03d}{'.jpg' if i % 2 else '.png'}", quality=92)


def one_at_a_time(project, captioner, options: CaptionOptions) -> float:
    """The naive loop; returns seconds."""
    import torch
    from PIL import Image

    start = time.perf_counter()
    for path in dataset_images(project):
        with Image.open(path) as im:
            image = im.convert("RGB")
        pixels = captioner.processor(images=image, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = captioner.model.generate(pixel_values=pixels.to(captioner.device, captioner.dtype),
                                           **_generation_kwargs(options))
        text = clean_caption(captioner.tokenizer.decode(out[0], skip_special_tokens=True))
        caption_store.write_caption(path, text)
    return time.perf_counter() - start


def batched(project, captioner, options: CaptionOptions) -> float:
    start = time.perf_counter()
    report = caption_project(project, options, captioner=captioner)
    assert len(report.captioned) == len(dataset_images(project)), report.failed
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="synthetic:blip-tiny")
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=75)
    ap.add_argument("--size", type=int, default=512, help="image side in pixels")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--mode", choices=("both", "one", "batched"), default="both")
    args = ap.parse_args()

    import torch

    captioner = load_captioner(args.model, device=args.device)
    with tempfile.TemporaryDirectory(prefix="bench-caption-") as tmp:
        project = create_project("bench", Path(tmp))
        make_images(project.dataset, args.images, args.size)
        options = CaptionOptions(model=args.model, beams=args.beams, max_length=args.max_length,
                                 batch_size=args.batch_size, overwrite=True, prefix="")
        if args.mode != "both":
            run = one_at_a_time if args.mode == "one" else batched
            took = [run(project, captioner, options) for _ in range(args.repeats)]
            print(json.dumps({"mode": args.mode, "images": args.images, "batch_size": args.batch_size,
                              "img_per_s": round(args.images / statistics.median(took), 2),
                              "runs_s": [round(x, 3) for x in took]}))
            return
        batched(project, captioner, options)  # warm-up: first-call allocations, thread start-up
        base, eng = [], []
        for _ in range(args.repeats):
            base.append(one_at_a_time(project, captioner, options))
            eng.append(batched(project, captioner, options))
    b, e = statistics.median(base), statistics.median(eng)
    print(json.dumps({
        "images": args.images, "model": args.model, "device": str(captioner.device),
        "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "batch_size": args.batch_size,
        "beams": args.beams, "max_length": args.max_length, "image_size": args.size,
        "one_at_a_time_s": round(b, 3), "batched_s": round(e, 3),
        "one_at_a_time_img_per_s": round(args.images / b, 2), "batched_img_per_s": round(args.images / e, 2),
        "speedup": round(b / e, 2), "runs_s": {"one_at_a_time": [round(x, 3) for x in base],
                                               "batched": [round(x, 3) for x in eng]}}))


if __name__ == "__main__":
    main()
