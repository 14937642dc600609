"""The train form's fields: what the form shows of a TrainConfig, with each field's label.

A table of its own, so loradeck.tui.form_hints can name the form's fields without importing the form.
"""

from __future__ import annotations

from dataclasses import dataclass

from loradeck.trainer.config import train_config
from loradeck.trainer.config.resolve import FIELD_HELP


@dataclass(frozen=True)
class Field:
    name: str  # a TrainConfig field ("length" is max_train_steps / max_train_epochs)
    kind: str  # str | int | float | choice | bool | prompts | length
    label: str
    choices: tuple[str, ...] = ()


FIELDS: tuple[Field, ...] = (
    Field("base_model", "str", "Base model"),
    Field("output_name", "str", "Output name"),
    Field("length", "length", "Train for"),
    Field("repeats", "int", "Repeats per epoch"),
    Field("batch_size", "int", "Batch size"),
    Field("gradient_accumulation_steps", "int", "Grad. accumulation"),
    Field("resolution", "int", "Resolution (px)"),
    Field("rank", "int", "LoRA rank"),
    Field("alpha", "float", "LoRA alpha"),
    Field("learning_rate", "float", "Learning rate"),
    Field("lr_scheduler", "choice", "LR schedule", train_config.SCHEDULERS),
    Field("lr_warmup_steps", "int", "Warmup steps"),
    Field("optimizer", "choice", "Optimizer", train_config.OPTIMIZERS),
    Field("mixed_precision", "choice", "Mixed precision", train_config.MIXED_PRECISION),
    Field("attention", "choice", "Attention", train_config.ATTENTION),
    Field("gradient_checkpointing", "bool", "Gradient checkpointing"),
    Field("cache_latents", "bool", "Cache latents"),
    Field("train_text_encoder", "bool", "Train text encoder"),
    Field("sample_prompts", "prompts", "Sample prompts"),
    Field("sample_every_steps", "int", "Sample every N steps"),
    Field("save_every_steps", "int", "Save every N steps"),
    Field("seed", "int", "Seed"),
)
LIMIT_FIELDS = ("max_train_steps", "max_train_epochs")
FORM_KEYS = frozenset(f.name for f in FIELDS) | set(LIMIT_FIELDS)


def field_help(name: str) -> str:
    """The help line of a form field (the engine's FIELD_HELP; "length" is steps or epochs)."""
    if name == "length":
        return FIELD_HELP.get("max_train_steps", "") + "; " + FIELD_HELP.get("max_train_epochs", "")
    return FIELD_HELP.get(name, "")
