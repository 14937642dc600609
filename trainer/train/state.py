"""Resumable training state: `state/step-<N>/` in the run folder.

    lora_unet.safetensors   adapter weights (fp32, peft naming)
    lora_te.safetensors     text-encoder adapter weights, when trained
    optimizer.pt            optimizer state dict          } loaded with torch.load(weights_only=True):
    scheduler.pt            LR scheduler state dict       } plain tensors, numbers and lists only
    scaler.pt               fp16 grad scaler, when used   }
    rng.json                Python / NumPy RNG states; torch_rng.safetensors the torch (CPU, CUDA) states
    meta.json               step, epoch, micro-batch index, total steps; written last = "complete"

A state is built in a hidden temporary folder and renamed into place, so a kill mid-save leaves the
previous state intact and `latest()` never returns a half-written one.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradeck.trainer.atomic import atomic_write_text, fsync_dir

STATE_PREFIX = "step-"
KEEP_STATES = 2


@dataclass
class SavedState:
    path: Path
    step: int
    meta: dict[str, Any]


def _state_dirs(state_root: Path) -> list[SavedState]:
    found = []
    if not state_root.is_dir():
        return found
    for d in state_root.iterdir():
        if not d.is_dir() or not d.name.startswith(STATE_PREFIX):
            continue
        try:
            meta = json.loads((d / "meta.json").read_text())
            found.append(SavedState(d, int(meta["step"]), meta))
        except (OSError, ValueError, KeyError):
            continue  # incomplete: no meta.json yet
    return sorted(found, key=lambda s: s.step)


def latest(state_root: Path) -> SavedState | None:
    """The newest complete state, or None."""
    states = _state_dirs(state_root)
    return states[-1] if states else None


def newest_first(state_root: Path) -> list[SavedState]:
    """Every complete state, newest first: what resume tries, in order."""
    return list(reversed(_state_dirs(state_root)))


class DamagedState(Exception):
    """A saved state that cannot be read or does not fit this run (message: folder name and why)."""


def save(state_root: Path, *, step: int, meta: dict[str, Any], unet_lora: dict, te_lora: dict | None,
         optimizer, lr_scheduler, scaler=None, keep: int = KEEP_STATES) -> Path:
    """Write state for `step` atomically; older states beyond `keep` are removed."""
    # numpy, safetensors, torch: only when a checkpoint is saved or loaded; the CLI imports this module
    import numpy as np
    import torch
    from safetensors.torch import save_file

    state_root.mkdir(exist_ok=True)  # not parents: a deleted run folder must not come back
    final = state_root / f"{STATE_PREFIX}{step}"
    tmp = state_root / f".tmp-{STATE_PREFIX}{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(unet_lora, tmp / "lora_unet.safetensors")
        if te_lora:
            save_file(te_lora, tmp / "lora_te.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(lr_scheduler.state_dict(), tmp / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), tmp / "scaler.pt")
        rng = {"torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"torch_cuda_{i}"] = s
        save_file(rng, tmp / "torch_rng.safetensors")
        np_state = np.random.get_state()
        py_state = random.getstate()
        (tmp / "rng.json").write_text(json.dumps({
            "python": [py_state[0], list(py_state[1]), py_state[2]],
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        }))
        atomic_write_text(tmp / "meta.json", json.dumps({"step": step, **meta}, indent=1))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        fsync_dir(state_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in _state_dirs(state_root)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
    return final


def load(saved: SavedState, *, optimizer, lr_scheduler, scaler=None) -> tuple[dict, dict | None]:
    """Restore optimizer, scheduler, scaler and RNG from `saved`; returns (unet_lora, te_lora) weights.

    Every file is read and parsed before anything is restored, so a damaged state (truncated or
    corrupt file, or one written for another network) raises DamagedState and changes nothing.
    """
    # numpy, safetensors, torch: only when a checkpoint is saved or loaded; the CLI imports this module
    import numpy as np
    import torch
    from safetensors.torch import load_file

    d = saved.path
    try:
        unet_lora = load_file(d / "lora_unet.safetensors")
        te_lora = load_file(d / "lora_te.safetensors") if (d / "lora_te.safetensors").exists() else None
        optimizer_state = torch.load(d / "optimizer.pt", weights_only=True, map_location="cpu")
        scheduler_state = torch.load(d / "scheduler.pt", weights_only=True)
        scaler_state = torch.load(d / "scaler.pt", weights_only=True) \
            if scaler is not None and (d / "scaler.pt").exists() else None
        rng = load_file(d / "torch_rng.safetensors")
        other = json.loads((d / "rng.json").read_text())
        py, npst = other["python"], other["numpy"]
    except Exception as e:  # safetensors, pickle, zip and JSON errors all mean the same here
        raise DamagedState(f"{d.name}: {type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
    try:
        optimizer.load_state_dict(optimizer_state)
    except (ValueError, KeyError, RuntimeError) as e:
        raise DamagedState(f"{d.name}: the optimizer state does not fit this run ({e})") from None
    lr_scheduler.load_state_dict(scheduler_state)
    if scaler_state is not None:
        scaler.load_state_dict(scaler_state)
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        states = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    random.setstate((py[0], tuple(py[1]), py[2]))
    np.random.set_state((npst[0], np.array(npst[1], dtype=np.uint32), *npst[2:]))
    return unet_lora, te_lora
