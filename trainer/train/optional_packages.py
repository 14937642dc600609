"""Knobs that need an optional package (the `gpu` extra): what happens when it is not installed.

- attention = "xformers" without xformers: the run uses SDPA instead (torch 2's fused attention is
  in the same memory class), with a warning. Configs pasted from kohya guides set `xformers = true`
  on any box; refusing them would stop a run that SDPA trains just as well.
- optimizer = "adamw8bit" without bitsandbytes: refused (there is no equivalent: plain AdamW needs
  4x the optimizer memory), naming the extra to install.

One place for these rules: run creation (trainer.runs.lifecycle), the trainer (trainer.train.loop), the
train form and `loradeck check` all ask here. No torch import.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache

from loradeck.trainer.errors import ConfigError

GPU_EXTRA = "pip install 'loradeck[gpu]'"


@lru_cache(maxsize=None)
def installed(package: str) -> bool:
    """Is `package` importable here (found, not imported)?"""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def attention_used(attention: str) -> str:
    """The attention the trainer will really use for the configured one."""
    return "sdpa" if attention == "xformers" and not installed("xformers") else attention


def attention_warning(attention: str) -> str | None:
    """The warning for a configured attention this box cannot run as asked, else None."""
    if attention_used(attention) != attention:
        return (f"attention xformers: the xformers package is not installed; using sdpa instead"
                f" (same memory class in torch 2; for xformers: {GPU_EXTRA}, CUDA only)")
    return None


def check_optimizer(optimizer: str) -> None:
    """Refuse an optimizer whose package is missing (ConfigError naming the extra)."""
    if optimizer == "adamw8bit" and not installed("bitsandbytes"):
        raise missing_bitsandbytes()


def missing_bitsandbytes() -> ConfigError:
    return ConfigError("optimizer adamw8bit needs bitsandbytes, which is not installed",
                       hint=f"{GPU_EXTRA} (CUDA only), or use --optimizer adamw")


def warnings_for(cfg) -> list[str]:
    """Warnings about `cfg`'s knobs on this box (what the form and `check` show)."""
    warning = attention_warning(cfg.attention)
    return [warning] if warning else []


def problems_for(cfg) -> list[str]:
    """One-line refusals for `cfg`'s knobs on this box, with the fix."""
    try:
        check_optimizer(cfg.optimizer)
    except ConfigError as e:
        return [f"{e} ({e.hint})"]
    return []
