"""Estimates already made: a traced step costs seconds, the same knobs on the same model cost nothing.

The key is everything the answer depends on: the estimate's knobs (vram_estimate.KNOB_FIELDS), the
model's identity (a synthetic name; a folder's or hub snapshot's component configs; a single file's
size and modification time), the versions of torch, diffusers, transformers and peft, and the source
of the code that traces (so an edit to it never serves an old answer). One small JSON file per key in
`<cache>/estimates/`, written atomically; an unreadable one is a miss.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.cache_dir import cache_dir
from loradeck.trainer.config import model_family

# The modules whose code decides the answer (their source is part of the key).
TRACING_MODULES = ("gpu/vram_estimate.py", "gpu/memory_trace.py", "gpu/model_skeleton.py",
                   "train/network_setup.py", "train/lora_network.py", "train/sdxl_conditioning.py")
CONFIG_FILES = ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                "text_encoder_2/config.json", "scheduler/scheduler_config.json")
_ENGINE = Path(__file__).resolve().parents[1]


def folder() -> Path:
    return cache_dir() / "estimates"


def key(knobs: dict[str, Any]) -> str | None:
    """The cache key of an estimate of `knobs` (None: the model cannot be identified, do not cache)."""
    model = _model_identity(knobs.get("base_model"))
    if model is None:
        return None
    h = hashlib.sha256()
    h.update(json.dumps({"knobs": knobs, "model": model, "versions": _versions()}, sort_keys=True,
                        default=str).encode())
    for name in TRACING_MODULES:
        try:
            h.update((_ENGINE / name).read_bytes())
        except OSError:
            return None
    return h.hexdigest()[:32]


def load(cache_key: str | None) -> dict[str, Any] | None:
    if cache_key is None:
        return None
    try:
        data = json.loads((folder() / f"{cache_key}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def store(cache_key: str | None, data: dict[str, Any]) -> None:
    """Best effort: a read-only or full cache folder only costs the next estimate its time."""
    if cache_key is None:
        return
    try:
        folder().mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder() / f"{cache_key}.json", json.dumps(data))
    except OSError:
        pass


def _model_identity(base_model: Any) -> Any:
    if not isinstance(base_model, str) or not base_model.strip():
        return None
    if base_model.startswith("synthetic:"):
        return base_model
    path = Path(base_model).expanduser()
    if path.is_file():
        stat = path.stat()
        return {"file": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    root = path if path.is_dir() else model_family.hub_cache_folder(base_model)
    if root is None:
        return None
    configs = {}
    for name in CONFIG_FILES:
        try:
            configs[name] = (root / name).read_text(encoding="utf-8")
        except OSError:
            continue
    return {"configs": configs} if "unet/config.json" in configs else None


def _versions() -> dict[str, str]:
    out = {}
    for package in ("torch", "diffusers", "transformers", "peft"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "-"
    return out
