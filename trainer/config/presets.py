"""Memory presets of the train form: named sets of TrainConfig overrides.

A preset sets only the knobs it is about (precision, attention, checkpointing, caching, optimizer,
batch, rank); everything else on the form keeps its value. A GPU preset is named by what it needs:
its GPU memory as nvidia-smi would show it, computed once by loradeck.trainer.gpu.vram_estimate and stored
here (tests/tui_runs/test_presets_estimate.py recomputes it): for SD1.5 at 512 px, and for the SDXL
preset SDXL base (synthetic:sdxl) at its 1024 px (sd-scripts' SDXL docs put that recipe at 8 GB
possible, 10 GB advised; loradeck caches the latents with every model already on the GPU, which sets
its reserve).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loradeck.trainer.config.train_config import TrainConfig, apply

GiB = 1024 ** 3


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)
    # It turns sampling on, so it needs a prompt: one made from the project's trigger word.
    prompts_from_trigger: bool = False
    # (torch.cuda.max_memory_allocated, nvidia-smi) in GiB, from loradeck.trainer.gpu.vram_estimate, for
    # `estimate_model` at 512 px unless the overrides set the resolution
    estimate_gib: tuple[float, float] | None = None
    estimate_model: str = "synthetic:sd15"


def _gpu_preset(label: str, description: str, estimate_gib: tuple[float, float], overrides: dict,
                model: str = "synthetic:sd15") -> Preset:
    """A GPU preset named by its estimated nvidia-smi memory, e.g. "3.7 GiB"."""
    return Preset(f"{estimate_gib[1]:.1f} GiB{' ' + label if label else ''}", description, overrides,
                  estimate_gib=estimate_gib, estimate_model=model)


PRESETS: tuple[Preset, ...] = (
    _gpu_preset("fast", "no checkpointing, cached latents, batch 4: fastest where memory allows", (6.25, 7.30), {
        "mixed_precision": "fp16", "attention": "sdpa", "gradient_checkpointing": False,
        "cache_latents": True, "optimizer": "adamw", "batch_size": 4}),
    _gpu_preset("", "fp16, gradient checkpointing, cached latents, batch 4 (training peak 2.9 GiB)", (2.92, 3.70), {
        "mixed_precision": "fp16", "attention": "sdpa", "gradient_checkpointing": True,
        "cache_latents": True, "optimizer": "adamw", "batch_size": 4}),
    _gpu_preset("", "fp16, checkpointing, cached latents, 8-bit AdamW, batch 1, rank 8", (2.13, 2.85), {
        "mixed_precision": "fp16", "attention": "sdpa", "gradient_checkpointing": True,
        "cache_latents": True, "optimizer": "adamw8bit", "batch_size": 1, "rank": 8, "alpha": 8.0}),
    Preset("CPU demo", "synthetic:tiny at 64 px for 6 steps, a sample every 3: checks the whole pipeline on a CPU", {
        "base_model": "synthetic:tiny", "mixed_precision": "no", "attention": "sdpa",
        "gradient_checkpointing": False, "cache_latents": False, "optimizer": "adamw",
        "batch_size": 1, "resolution": 64, "rank": 4, "alpha": 4.0,
        "max_train_steps": 6, "max_train_epochs": None, "sample_steps": 4,
        "sample_every_steps": 3},  # two samples, so the monitor's sample panel shows in the demo
        prompts_from_trigger=True),
    _gpu_preset("SDXL", "SDXL 1024 px, UNet only: fp16, checkpointing, cached latents and text, 8-bit AdamW "
                        "(training peak 5.6 GiB)", (5.62, 6.62), {
        "mixed_precision": "fp16", "attention": "sdpa", "gradient_checkpointing": True,
        "cache_latents": True, "cache_text_embeddings": True, "train_text_encoder": False,
        "optimizer": "adamw8bit", "batch_size": 1, "resolution": 1024, "rank": 16, "alpha": 16.0},
        model="synthetic:sdxl"),
)
SDXL_PRESET = PRESETS[-1].name  # "6.6 GiB SDXL"

BY_NAME = {p.name: p for p in PRESETS}


def get(name: str) -> Preset:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no preset {name!r} (known: {', '.join(BY_NAME)})") from None


def sample_prompt(trigger: str) -> str:
    """A sample prompt that shows what the LoRA learnt: its trigger word, else a plain photo prompt."""
    trigger = " ".join(trigger.split())
    return f"{trigger}, a photo" if trigger else "a photo"


def applied(cfg: TrainConfig, name: str, *, trigger: str = "") -> TrainConfig:
    """`cfg` with the preset's knobs set (every preset key is a TrainConfig field). A preset that turns
    sampling on gives a config with no prompt one from `trigger` (the project's trigger word), so
    the run makes the samples the preset promises; prompts already there are kept."""
    preset = get(name)
    overrides = dict(preset.overrides)
    if preset.prompts_from_trigger and not cfg.sample_prompts:
        overrides["sample_prompts"] = [sample_prompt(trigger)]
    return apply(cfg, overrides, source=f"preset {name}")
