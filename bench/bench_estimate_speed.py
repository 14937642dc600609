"""How long the VRAM estimate takes to answer, cold and warm, with the estimate cache off.

    python bench/bench_estimate_speed.py [--model synthetic:sd15] [--resolution 512] [--repeats 3]

Prints, each as whole-process or round-trip wall time on this machine:
  imports     a fresh `python -c` importing what the trainer's setup code is made of (torch, diffusers'
              UNet and VAE, transformers' CLIP, peft): the floor under any cold estimate that runs the
              trainer's own code
  cold CLI    `loradeck estimate` in a fresh process (SD1.5 512 px batch 4, the issue's question)
  warm        the train form's path: one loradeck.tui.estimator child, its start until ready, then
              questions that each change a knob (batch 4 first), round trip per question
Medians of --repeats; the estimate cache is off (LORADECK_NO_ESTIMATE_CACHE=1) throughout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMPORTS = ("import torch; from diffusers import UNet2DConditionModel, AutoencoderKL; "
           "from transformers import CLIPTextModel; import peft")
KNOBS = ["--mixed-precision", "fp16", "--gradient-checkpointing", "--cache-latents", "--cache-text-embeddings"]


def wall(argv: list[str], **kwargs) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="synthetic:sd15")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ["LORADECK_NO_ESTIMATE_CACHE"] = "1"
    loradeck = str(Path(sys.executable).with_name("loradeck"))

    imports = [wall([sys.executable, "-c", IMPORTS]) for _ in range(args.repeats)]
    print(f"imports only      median {statistics.median(imports):6.2f} s  {[round(t, 2) for t in imports]}")

    with tempfile.TemporaryDirectory() as work:
        subprocess.run([loradeck, "--root", work, "init", "p", "--base-model", args.model], check=True,
                       stdout=subprocess.DEVNULL)
        cli = [loradeck, "--root", work, "estimate", "p", "--resolution", str(args.resolution), "--batch-size", "4",
               *KNOBS]
        cold = [wall(cli) for _ in range(args.repeats)]
    print(f"cold CLI          median {statistics.median(cold):6.2f} s  {[round(t, 2) for t in cold]}")

    from loradeck.tui.estimator import Estimator

    base = {"base_model": args.model, "resolution": args.resolution, "mixed_precision": "fp16",
            "gradient_checkpointing": True, "cache_latents": True, "cache_text_embeddings": True}
    questions = [dict(base, batch_size=4), dict(base, batch_size=2), dict(base, batch_size=4, rank=32),
                 dict(base, batch_size=4, gradient_checkpointing=False), dict(base, batch_size=1),
                 dict(base, batch_size=4, optimizer="adamw8bit")]
    estimator = Estimator()
    try:
        started = time.perf_counter()
        estimator.start()
        first = estimator.ask(questions[0])
        first_s = time.perf_counter() - started
        assert first and first.get("ok"), first
        print(f"warm child: start + first answer {first_s:6.2f} s")
        times = []
        for q in questions[1:] + questions[:1]:
            started = time.perf_counter()
            answer = estimator.ask(q)
            times.append(time.perf_counter() - started)
            assert answer and answer.get("ok"), answer
        print(f"warm questions    median {statistics.median(times):6.2f} s  max {max(times):.2f} s  "
              f"{[round(t, 2) for t in times]}  (one child: {estimator.starts == 1})")
    finally:
        estimator.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
