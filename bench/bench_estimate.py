"""VRAM estimate: accuracy on the CPU, and the SD1.5 table for docs/training.md.

    python bench/bench_estimate.py --accuracy [--model synthetic:tiny] [--resolution 256]
        For each knob combination: loradeck.trainer.gpu.vram_estimate's trace on the meta device (the estimate)
        against the same tracker (loradeck.trainer.gpu.memory_trace) measuring one real step with real CPU
        tensors and real weights, run through the same code with torch's AdamW for the optimizer
        state. Prints the error of the traced peak; the goal is within 5 %. SD1.x and SDXL models
        alike (--model synthetic:sdxl-tiny --resolution 64: both text encoders, pooled embedding and
        time ids); --text-encoder adds a row with the text encoder(s) trained.
    python bench/bench_estimate.py --table [--model synthetic:sd15] [--resolution 512]
        The estimate for batch 1 and 4 across the knob matrix (markdown rows for docs/training.md).

Both are CPU-only. The GPU side (estimate vs torch.cuda.max_memory_allocated and NVML) is in
bench/bench_gpu_matrix.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from loradeck.trainer.config.train_config import TrainConfig  # noqa: E402

GiB = 1024 ** 3

# name -> knobs over the default config (fp16 mixed precision, sdpa, AdamW)
MATRIX = {
    "plain": {},
    "checkpointing": {"gradient_checkpointing": True},
    "cache": {"cache_latents": True, "cache_text_embeddings": True},
    "cache + checkpointing": {"cache_latents": True, "cache_text_embeddings": True, "gradient_checkpointing": True},
    "cache + checkpointing + 8-bit Adam": {"cache_latents": True, "cache_text_embeddings": True,
                                           "gradient_checkpointing": True, "optimizer": "adamw8bit"},
    "fp32 (no mixed precision)": {"mixed_precision": "no"},
    "eager attention": {"attention": "eager"},
}


def table(model: str, resolution: int) -> None:
    from loradeck.trainer.gpu import vram_estimate

    print(f"| knobs ({model}, {resolution} px, fp16, sdpa, rank 16) | batch | peak allocated | nvidia-smi | "
          "peak in | estimate took |")
    print("|---|---|---|---|---|---|")
    for name, knobs in MATRIX.items():
        for batch in (1, 4):
            cfg = TrainConfig(base_model=model, resolution=resolution, batch_size=batch, **knobs)
            e = vram_estimate.estimate(cfg)
            print(f"| {name} | {batch} | {e.expected_peak_bytes / GiB:.2f} GiB | {e.nvidia_smi_bytes / GiB:.2f} GiB | "
                  f"{e.peak_phase} | {e.seconds:.1f} s |", flush=True)


def compare(cfg: TrainConfig) -> tuple[dict, dict, float, float]:
    """(meta trace, real CPU trace, seconds of each) of one step of `cfg` (tests call this too)."""
    import torch

    from loradeck.trainer.gpu import model_skeleton, vram_estimate
    from loradeck.trainer.train import models

    t = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        meta = vram_estimate.trace_step(cfg, model_skeleton.build(cfg.base_model), torch.device("meta"))
    t_meta = time.perf_counter() - t
    t = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        real = vram_estimate.trace_step(dataclasses.replace(cfg), models.load_base_model(cfg.base_model),
                                        torch.device("cpu"), real_optimizer=True)
    return meta, real, t_meta, time.perf_counter() - t


def cpu_knobs(knobs: dict) -> dict:
    """On the CPU bf16 stands for fp16 (same bytes; CPU fp16 kernels are slow)."""
    knobs = dict(knobs)
    if knobs.get("mixed_precision", "fp16") == "fp16":
        knobs["mixed_precision"] = "bf16"
    return knobs


def accuracy(model: str, resolution: int, batch: int, only: list[str] | None = None,
             text_encoder: bool = False) -> float:
    """Largest relative error of the meta trace against the real-tensor trace over the matrix."""
    worst = 0.0
    # 8-bit Adam has no CPU kernel, so its modelled state is compared against itself (skipped here).
    rows = dict(MATRIX, **({"text encoder trained": {"train_text_encoder": True}} if text_encoder else {}))
    for name, knobs in rows.items():
        if knobs.get("optimizer") == "adamw8bit" or (only and name not in only):
            continue
        cfg = TrainConfig(base_model=model, resolution=resolution, batch_size=batch, **cpu_knobs(knobs))
        meta, real, t_meta, t_real = compare(cfg)
        err = (meta["peak"] - real["peak"]) / real["peak"]
        worst = max(worst, abs(err))
        print(f"| {name} | {batch} | {meta['peak'] / 2**20:.1f} MiB | {real['peak'] / 2**20:.1f} MiB | {err:+.2%} | "
              f"{meta['peak_phase']} / {real['peak_phase']} | {t_meta:.1f} s / {t_real:.1f} s |", flush=True)
    return worst


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--table", action="store_true")
    p.add_argument("--accuracy", action="store_true")
    p.add_argument("--model", default=None)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--only", action="append", metavar="ROW", help="only this row of the matrix (repeatable)")
    p.add_argument("--text-encoder", action="store_true", help="add a row with the text encoder(s) trained")
    args = p.parse_args(argv)
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    if args.table:
        table(args.model or "synthetic:sd15", args.resolution or 512)
    if args.accuracy:
        model = args.model or "synthetic:tiny"
        print(f"| knobs ({model}, {args.resolution or 256} px, bf16 for fp16) | batch | meta trace | real CPU step | "
              "error | peak in (meta / real) | time (meta / real) |")
        print("|---|---|---|---|---|---|---|")
        worst = accuracy(model, args.resolution or 256, args.batch, args.only, args.text_encoder)
        print(f"worst error {worst:.2%} (goal within 5 %)")
        return 0 if worst <= 0.05 else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
