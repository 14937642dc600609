"""The training run configuration: one typed object, resolved once and written into the run.

Pure Python (no torch), so the TUI imports it to build and validate its form. The resolution order
is: defaults < project.toml [train] < --config FILE < command-line flags. The result is written to
runs/<id>/config.toml and is all a run (or its resume) needs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from loradeck.trainer.errors import ConfigError

MIXED_PRECISION = ("no", "fp16", "bf16")
ATTENTION = ("sdpa", "xformers", "eager")
OPTIMIZERS = ("adamw", "adamw8bit")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")
TARGETS = ("attention", "kohya")  # kohya = attention + feed-forward + proj_in/proj_out
PREDICTION = ("auto", "epsilon", "v_prediction")
SAVE_PRECISION = ("fp16", "bf16", "fp32")


@dataclass
class TrainConfig:
    # what to train
    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    output_name: str = "lora"
    prediction_type: str = "auto"
    # how long
    max_train_steps: int | None = None
    max_train_epochs: int | None = 10
    repeats: int = 1
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    # network
    rank: int = 16
    alpha: float = 16.0
    target_modules: str = "attention"
    train_text_encoder: bool = False
    # optimisation
    optimizer: str = "adamw"
    learning_rate: float = 1e-4
    text_encoder_lr: float | None = None
    lr_scheduler: str = "constant"
    lr_warmup_steps: int = 0
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    # data
    resolution: int = 512
    shuffle_caption: bool = False
    keep_tokens: int = 0
    caption_dropout_rate: float = 0.0
    noise_offset: float = 0.0
    min_snr_gamma: float = 0.0  # 0 disables
    seed: int = 42
    # memory knobs
    mixed_precision: str = "fp16"
    attention: str = "sdpa"
    gradient_checkpointing: bool = False
    cache_latents: bool = False
    cache_latents_to_disk: bool = True
    cache_text_embeddings: bool = False
    vae_fp32: bool = True
    # samples and checkpoints
    sample_prompts: list[str] = field(default_factory=list)
    sample_every_steps: int = 0
    sample_every_epochs: int = 0
    sample_steps: int = 20
    sample_guidance: float = 7.0
    save_every_steps: int = 0
    save_every_epochs: int = 0
    save_last_n: int = 3
    save_precision: str = "fp16"
    # placement
    gpus: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def effective_batch(self) -> int:
        return self.batch_size * self.gradient_accumulation_steps * max(1, self.gpus)


_CHOICES = {
    "mixed_precision": MIXED_PRECISION, "attention": ATTENTION, "optimizer": OPTIMIZERS,
    "lr_scheduler": SCHEDULERS, "target_modules": TARGETS, "prediction_type": PREDICTION,
    "save_precision": SAVE_PRECISION,
}
_POSITIVE = {"batch_size", "gradient_accumulation_steps", "rank", "repeats", "resolution", "gpus",
             "sample_steps", "save_last_n"}
_NON_NEGATIVE = {"lr_warmup_steps", "keep_tokens", "noise_offset", "min_snr_gamma", "sample_every_steps",
                 "sample_every_epochs", "save_every_steps", "save_every_epochs", "weight_decay", "max_grad_norm"}
FIELD_NAMES = tuple(f.name for f in fields(TrainConfig))


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """Check one value against the field's annotation (a string, from `from __future__`)."""
    kind = str(kind)
    if value is None:
        if "None" in kind:
            return None
        raise ConfigError(f"{name}: a value is required")
    if kind.startswith("bool"):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if kind.startswith("int"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected a whole number, got {value!r}")
        return value
    if kind.startswith("float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if kind.startswith("list"):
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings")
        return list(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected text, got {value!r}")
        return value
    raise AssertionError(f"unhandled field type {kind} for {name}")


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check ranges, choices and combinations; raises ConfigError with every problem at once.

    A check that combines fields runs when those fields have the right type, so `batch_size = 0`
    and `resolution = 7` are both reported, not only the first.
    """
    problems = []
    bad = set()  # fields whose value is of the wrong type: checks that use them are skipped
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        try:
            setattr(cfg, f.name, _coerce(f.name, f.type, value))
        except ConfigError as e:
            problems.append(str(e))
            bad.add(f.name)
            continue
        if f.name in _CHOICES and value not in _CHOICES[f.name]:
            problems.append(f"{f.name}: {value!r} is not one of {', '.join(_CHOICES[f.name])}")
        if f.name in _POSITIVE and isinstance(value, (int, float)) and value <= 0:
            problems.append(f"{f.name}: must be at least 1")
        if f.name in _NON_NEGATIVE and isinstance(value, (int, float)) and value < 0:
            problems.append(f"{f.name}: must not be negative")

    def ok(*names: str) -> bool:
        return not bad.intersection(names)

    if ok("max_train_steps") and cfg.max_train_steps is not None and cfg.max_train_steps <= 0:
        problems.append("max_train_steps: must be at least 1")
    if ok("max_train_epochs") and cfg.max_train_epochs is not None and cfg.max_train_epochs <= 0:
        problems.append("max_train_epochs: must be at least 1")
    if ok("max_train_steps", "max_train_epochs") and cfg.max_train_steps is None and cfg.max_train_epochs is None:
        problems.append("set max_train_steps or max_train_epochs")
    if ok("learning_rate") and cfg.learning_rate <= 0:
        problems.append("learning_rate: must be positive")
    if ok("caption_dropout_rate") and not 0 <= cfg.caption_dropout_rate < 1:
        problems.append("caption_dropout_rate: must be in [0, 1)")
    if ok("alpha") and cfg.alpha <= 0:
        problems.append("alpha: must be positive")
    if ok("resolution") and cfg.resolution % 8:
        problems.append("resolution: must be a multiple of 8")
    if ok("cache_text_embeddings", "train_text_encoder") and cfg.cache_text_embeddings and cfg.train_text_encoder:
        problems.append("cache_text_embeddings: cannot cache text embeddings while training the text encoder")
    if ok("cache_text_embeddings", "shuffle_caption", "caption_dropout_rate") and cfg.cache_text_embeddings and (
            cfg.shuffle_caption or cfg.caption_dropout_rate):
        problems.append("cache_text_embeddings: cannot cache while captions are shuffled or dropped each step")
    if ok("output_name") and (not cfg.output_name or "/" in cfg.output_name or cfg.output_name.startswith(".")):
        problems.append("output_name: must be a plain file name")
    if problems:
        raise ConfigError("invalid training config: " + "; ".join(problems))
    return cfg


def unknown_keys(mapping: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in mapping if k not in FIELD_NAMES)


def apply(cfg: TrainConfig, overrides: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
    """Return a copy of `cfg` with `overrides` set; unknown keys are refused, listed by name."""
    bad = unknown_keys(overrides)
    if bad:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(bad)}",
                          hint="see docs/configuration.md for the keys")
    return dataclasses.replace(cfg, **dict(overrides))


def from_mapping(mapping: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
    return validate(apply(TrainConfig(), mapping, source=source))


def from_run_file(doc: Mapping[str, Any], *, source: str) -> TrainConfig:
    """A run's config.toml (its keys, without the [dataset] table) as a TrainConfig. An optional field
    absent from the file is None: that is how the writer (loradeck.trainer.config.resolve.to_toml) leaves it out."""
    values: dict[str, Any] = {f.name: None for f in dataclasses.fields(TrainConfig) if "None" in str(f.type)}
    values.update(doc)
    return from_mapping(values, source=source)
