"""Turning training failures into `error` events that name the knob to turn.

One place knows which knobs lower memory and which tame a diverging loss, so the hint always points
at something this run has not already done.
"""

from __future__ import annotations

import gc
from typing import Any

from loradeck.trainer.config.train_config import TrainConfig


class TrainingFailed(Exception):
    """The loop stopped on a diagnosed failure; `kind`/`message`/`hint` become the error event."""

    def __init__(self, kind: str, message: str, hint: str):
        super().__init__(message)
        self.kind, self.message, self.hint = kind, message, hint


def is_oom(exc: BaseException) -> bool:
    import torch  # torch: only when training runs, not when this module is imported

    if isinstance(exc, getattr(torch, "OutOfMemoryError", ())) or \
            isinstance(exc, getattr(torch.cuda, "OutOfMemoryError", ())):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def oom_hint(cfg: TrainConfig) -> str:
    """The memory knobs not yet used by this config, cheapest-to-quality first."""
    knobs = []
    if not cfg.gradient_checkpointing:
        knobs.append("enable gradient checkpointing (--gradient-checkpointing)")
    if cfg.mixed_precision == "no":
        knobs.append("use mixed precision (--mixed-precision fp16 or bf16)")
    if cfg.batch_size > 1:
        knobs.append(f"lower --batch-size (now {cfg.batch_size}; raise gradient_accumulation_steps instead)")
    if not cfg.cache_latents:
        knobs.append("cache latents (--cache-latents)")
    if cfg.resolution > 512:
        knobs.append(f"lower --resolution (now {cfg.resolution})")
    if cfg.attention == "eager":
        knobs.append("use --attention sdpa")
    if not cfg.cache_text_embeddings and not cfg.train_text_encoder and not cfg.shuffle_caption \
            and not cfg.caption_dropout_rate:
        knobs.append("cache text embeddings (cache_text_embeddings = true)")
    if cfg.optimizer == "adamw":
        knobs.append("use --optimizer adamw8bit")
    if cfg.train_text_encoder:
        knobs.append("train the UNet only (train_text_encoder = false)")
    if cfg.rank > 32:
        knobs.append(f"lower --rank (now {cfg.rank})")
    if not knobs:
        knobs.append("lower --resolution or use a GPU with more memory")
    return "; ".join(knobs[:5])


def nan_hint(cfg: TrainConfig) -> str:
    knobs = [f"lower the learning rate (now {cfg.learning_rate:g})"]
    if cfg.mixed_precision == "fp16":
        if not cfg.vae_fp32:
            knobs.append("keep the VAE in fp32 (vae_fp32 = true)")
        knobs.append("try --mixed-precision bf16 (wider range than fp16)")
    if not cfg.max_grad_norm:
        knobs.append("clip gradients (max_grad_norm = 1.0)")
    if cfg.lr_warmup_steps == 0:
        knobs.append("add warmup (lr_warmup_steps)")
    return "; ".join(knobs)


def oom_failure(cfg: TrainConfig, exc: BaseException, step: int) -> TrainingFailed:
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "CUDA out of memory"
    return TrainingFailed("oom", f"out of GPU memory at step {step}: {text}", oom_hint(cfg))


# What runs out of memory outside the training step, and the knob that helps there.
PHASE_HINTS = {
    "loading model": "the frozen weights alone do not fit: use --mixed-precision fp16 or bf16 (half the bytes), "
                     "or a GPU with more free memory (loradeck estimate shows what the run needs)",
    "caching latents": "caching encodes --batch-size images at a time through the VAE: lower --batch-size or "
                       "--resolution, or set vae_fp32 = false (a half-precision VAE)",
    "caching text embeddings": "the text encoder ran out of memory while caching: free the GPU of other "
                               "processes, or set cache_text_embeddings = false",
    "sampling": "samples are made at the training resolution with the UNet and VAE decoder on the GPU: "
                "sample less often (sample_every_steps / sample_every_epochs = 0 turns samples off), or lower "
                "--resolution; the run's state was saved, resume with loradeck resume",
    "saving checkpoint": "saving copies the adapter off the GPU: free the GPU of other processes; "
                         "resume with loradeck resume",
    "exporting": "exporting copies the adapter off the GPU: free the GPU of other processes; the last saved "
                 "state can be resumed and exported again",
}


def phase_oom_failure(cfg: TrainConfig | None, exc: BaseException, phase: str | None,
                      step: int | None = None) -> TrainingFailed:
    """An out-of-memory error outside the training step, with the hint for the phase it happened in."""
    text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "CUDA out of memory"
    where = f"while {phase}" if phase else "outside the training step"
    at = f" at step {step}" if step else ""
    hint = PHASE_HINTS.get(phase or "") or (oom_hint(cfg) if cfg is not None else
                                            "free the GPU of other processes or use one with more memory")
    return TrainingFailed("oom", f"out of GPU memory {where}{at}: {text}", hint)


def nan_failure(cfg: TrainConfig, loss: Any, step: int) -> TrainingFailed:
    return TrainingFailed("nan", f"the loss became {loss} at step {step}; training diverged", nan_hint(cfg))


def vae_nan_failure(cfg: TrainConfig, step: int, images: list[str], vae_dtype: str) -> TrainingFailed:
    """NaN/inf latents: the VAE overflowed (SDXL's VAE does in fp16), not the adapter diverging."""
    if vae_dtype != "float32":
        hint = "keep the VAE in fp32 (vae_fp32 = true): SDXL's VAE overflows in fp16"
    else:
        hint = "check the image(s) open and look right; re-run prep on them (loradeck prep --force)"
    return TrainingFailed("nan", f"the VAE ({vae_dtype}) gave NaN/inf latents at step {step} for "
                                 f"{', '.join(images[:3])}", hint)


def free_accelerator_memory() -> None:
    """Release cached blocks after an OOM so that saving state has room to run."""
    import torch  # torch: only when training runs, not when this module is imported

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
