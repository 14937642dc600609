"""How much free GPU memory a run needs before it may start: `required_bytes(config)`, in one place.

The queue (loradeck.trainer.runs.queue) and the GPU picker (`--gpu auto`, loradeck.trainer.gpu.processes) ask only this.
When the VRAM estimate module (ESTIMATE_MODULE, `estimate(config)` with `.nvidia_smi_bytes` /
`.expected_peak_bytes`) is importable its answer is used; otherwise `heuristic_bytes`, a deliberately
generous rule of thumb (documented in docs/shared-gpu.md), so a run is never started on a GPU it
cannot fit on because the guess was low.

The estimator traces the model with torch; a caller that has not imported torch (the TUI, a queue
waiter, the CLI) gets it run in a short-lived subprocess (`python -m loradeck.trainer.gpu.run_memory MODULE`, the
config as JSON on stdin), so none of them ever loads torch.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from typing import Any

from loradeck.trainer import children
from loradeck.trainer.config import train_config

# The estimator's module; the one line to change if it lands under another name.
ESTIMATE_MODULE = "loradeck.trainer.gpu.vram_estimate"

GiB = 1024 ** 3
CUDA_CONTEXT = int(0.75 * GiB)   # the CUDA context and allocator slack every process pays
MARGIN = 1.25                    # what the rule of thumb adds on top, being a guess

# family: (frozen weights in parameters, activation bytes at its native resolution, batch 1, no
# gradient checkpointing, fp16; native resolution). Parameter counts are the components' sizes
# (UNet + text encoders + VAE); activations are generous round figures for LoRA training.
_FAMILIES = {
    "tiny": (5e6, 0.25 * GiB, 64),
    "sd1": (1.07e9, 4.0 * GiB, 512),
    "sdxl": (3.5e9, 10.0 * GiB, 1024),
}


def family_of(base_model: str) -> str:
    name = (base_model or "").lower()
    if "tiny" in name:
        return "tiny"
    if "xl" in name:
        return "sdxl"
    return "sd1"


def heuristic_bytes(cfg: Any) -> int:
    """A conservative guess of the free memory `cfg` (a TrainConfig) needs on one GPU.

    context + frozen weights (2 bytes each in fp16/bf16, else 4) + activations scaled by batch size
    and pixel count (x0.4 with gradient checkpointing, x2 in full fp32), all x MARGIN.
    """
    params, activations, native = _FAMILIES[family_of(getattr(cfg, "base_model", ""))]
    half = getattr(cfg, "mixed_precision", "fp16") in ("fp16", "bf16")
    weights = params * (2 if half else 4)
    scale = max(1, int(getattr(cfg, "batch_size", 1) or 1)) * (int(getattr(cfg, "resolution", native) or native)
                                                                / native) ** 2
    act = activations * scale * (0.4 if getattr(cfg, "gradient_checkpointing", False) else 1.0)
    act *= 1.0 if half else 2.0
    return int((CUDA_CONTEXT + weights + act) * MARGIN)


def _estimator():
    try:
        module = importlib.import_module(ESTIMATE_MODULE)
    except ImportError:
        return None
    return getattr(module, "estimate", None)


def _estimated(estimate, cfg: Any) -> int | None:
    try:
        result = estimate(cfg)
        need = getattr(result, "nvidia_smi_bytes", None)
        if not isinstance(need, int):
            peak = getattr(result, "expected_peak_bytes", None)
            need = peak + CUDA_CONTEXT if isinstance(peak, int) else None
        return need if isinstance(need, int) and need > 0 else None
    except Exception:  # an estimator bug must not block the queue: fall back to the guess
        return None


ESTIMATE_TIMEOUT = 300.0


def _estimated_elsewhere(cfg: Any) -> int | None:
    """The estimator's answer from a subprocess (this process stays free of torch)."""
    try:
        out = children.run(children.module_argv("loradeck.trainer.gpu.run_memory", ESTIMATE_MODULE),
                           input=json.dumps(cfg.to_dict()), capture_output=True, text=True,
                           timeout=ESTIMATE_TIMEOUT)
        need = int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return None
    return need if need > 0 else None


def required_bytes(cfg: Any) -> int:
    """Free GPU memory (bytes, as nvidia-smi counts it) the run needs to start: the estimator's
    answer when it is there and answers, else `heuristic_bytes`."""
    estimate = _estimator()
    if estimate is not None:
        need = _estimated(estimate, cfg) if "torch" in sys.modules else _estimated_elsewhere(cfg)
        if need:
            return need
    return heuristic_bytes(cfg)


def main(argv: list[str]) -> int:
    """`python -m loradeck.trainer.gpu.run_memory MODULE` < config JSON: print the estimator's bytes (0: none)."""
    module = importlib.import_module(argv[0])
    cfg = train_config.from_mapping(json.loads(sys.stdin.read()))
    print(_estimated(getattr(module, "estimate"), cfg) or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def source() -> str:
    """Where `required_bytes` gets its answer (shown next to it)."""
    return "estimate" if _estimator() is not None else "rule of thumb"
