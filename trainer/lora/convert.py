"""Convert LoRA files between the diffusers/peft layout and the kohya layout.

diffusers/peft layout (what diffusers' training examples write with `save_lora_weights`):
    unet.<module path>.lora_A.weight / .lora_B.weight        scale = lora_alpha / r from the
    text_encoder.<module path>.lora_A.weight / .lora_B.weight  `lora_adapter_metadata` header, else 1
  older variants are read too: `<path>.lora.down.weight` / `.lora.up.weight`, attention-processor keys
  (`<attn>.processor.to_q_lora.down.weight`) and optional `<path>.alpha` tensors.
kohya layout: see loradeck.trainer.lora.file_format.

kohya -> diffusers folds alpha/rank into lora_B, so the file has the same effect in any peft-format
loader, with or without the adapter metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from loradeck.trainer.atomic import atomic_write_bytes
from loradeck.trainer.cli_hint import command
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.lora import sdxl_names as lora_sdxl
from loradeck.trainer.lora.file_format import (
    ALPHA,
    CLIP_TEXT_ROOT,
    DOWN,
    TE_PREFIX,
    UNET_PREFIX,
    UP,
    LoraFileError,
    kohya_key,
    module_path_from_kohya,
    read_header,
    save_kohya_lora,
    split_kohya_key,
)
from loradeck.trainer.lora.validate import looks_diffusers

LAYOUTS = ("kohya", "diffusers")
ADAPTER_METADATA_KEY = "lora_adapter_metadata"  # diffusers' header key for the LoraConfig values
_PROCESSOR_NAMES = {"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}
_TE_PROCESSOR_NAMES = {"to_q_lora": "q_proj", "to_k_lora": "k_proj", "to_v_lora": "v_proj", "to_out_lora": "out_proj"}
_TE_ROOTS = (CLIP_TEXT_ROOT, "encoder.layers.", "embeddings.", "final_layer_norm")


class ConvertError(LoradeckError):
    """A file that cannot be converted."""


def detect_layout(path: str | os.PathLike) -> str:
    """"kohya", "diffusers" or "unknown", from the tensor names alone (no torch)."""
    info, _ = read_header(path)
    keys = list(info)
    if looks_diffusers(keys):
        return "diffusers"
    if keys and all(split_kohya_key(k) and k.startswith(("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"))
                    for k in keys):
        return "kohya"
    return "unknown"


def _parse_diffusers_key(key: str) -> tuple[str, str, str] | None:
    """(part, module path, "A"|"B"|"alpha") for a diffusers/peft key; part is "unet", "text_encoder" or
    (SDXL) "text_encoder_2"."""
    part = None
    for prefix in ("unet.", "text_encoder_2.", "text_encoder."):
        if key.startswith(prefix):
            part, key = prefix[:-1], key[len(prefix):]
            break
    if key.startswith("base_model.model."):
        key = key[len("base_model.model."):]
    if part is None:
        part = "text_encoder" if key.startswith(_TE_ROOTS) else "unet"
    parts = key.split(".")
    which = None
    if parts[-1] == "alpha":
        return part, ".".join(parts[:-1]), "alpha"
    for i, p in enumerate(parts):
        if p in ("lora_A", "lora_B") and parts[-1] == "weight" and len(parts) - i <= 3:
            which, module = p[-1], parts[:i]
            break
        if p in ("lora", "lora_linear_layer") and parts[i + 1:] in (["down", "weight"], ["up", "weight"]):
            which, module = ("A" if parts[i + 1] == "down" else "B"), parts[:i]
            break
        if p in _PROCESSOR_NAMES and parts[i + 1:] in (["down", "weight"], ["up", "weight"]):
            names = _PROCESSOR_NAMES if part == "unet" else _TE_PROCESSOR_NAMES
            module = [x for x in parts[:i] if x != "processor"] + [names[p]]
            which = "A" if parts[i + 1] == "down" else "B"
            break
    else:
        return None
    return part, ".".join(module), which


def _adapter_alphas(metadata: dict[str, str]) -> dict[str, tuple[float, float]]:
    """{part: (lora_alpha, r)} from diffusers' `lora_adapter_metadata` header, where present."""
    raw = metadata.get(ADAPTER_METADATA_KEY)
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    out = {}
    for part in ("unet", "text_encoder", "text_encoder_2"):
        alpha, r = meta.get(f"{part}.lora_alpha"), meta.get(f"{part}.r")
        if isinstance(alpha, (int, float)) and isinstance(r, (int, float)) and r > 0:
            out[part] = (float(alpha), float(r))
    return out


def diffusers_to_kohya(tensors: dict, metadata: dict[str, str] | None = None) -> dict:
    """kohya tensors from a diffusers/peft-layout state dict; the effective scale is kept exactly."""
    # Heavy: torch only where tensors are made.
    import torch

    alphas_meta = _adapter_alphas(metadata or {})
    modules: dict[tuple[str, str], dict[str, Any]] = {}
    for key, tensor in tensors.items():
        parsed = _parse_diffusers_key(key)
        if parsed is None:
            raise ConvertError(f"{key}: not a LoRA weight of the diffusers/peft layout")
        part, module, which = parsed
        modules.setdefault((part, module), {})[which] = tensor
    # SDXL: a second text encoder, more than one transformer layer per block, or the metadata says so.
    sdxl = any(part == "text_encoder_2" or ".transformer_blocks.1." in module for part, module in modules) \
        or str((metadata or {}).get("ss_base_model_version", "")).startswith("sdxl")
    out = {}
    for (part, module), ab in sorted(modules.items()):
        if "A" not in ab or "B" not in ab:
            raise ConvertError(f"{part}.{module}: lora_A/lora_B pair is incomplete")
        rank = ab["A"].shape[0]
        if "alpha" in ab:
            alpha = float(ab["alpha"].item())
        elif part in alphas_meta:
            lora_alpha, r = alphas_meta[part]
            alpha = lora_alpha / r * rank  # peft scale lora_alpha / r, written as kohya alpha / rank
        else:
            alpha = float(rank)  # no alpha anywhere: diffusers applies scale 1
        if sdxl:  # kohya's SDXL layout: SGM UNet block names, lora_te1_/lora_te2_
            try:
                name = lora_sdxl.kohya_sdxl_name(part, module)
            except LoraFileError as e:
                raise ConvertError(str(e)) from None
        elif part == "text_encoder":
            name = kohya_key(TE_PREFIX, module if module.startswith(CLIP_TEXT_ROOT) else CLIP_TEXT_ROOT + module)
        else:
            name = kohya_key(UNET_PREFIX, module)
        out[name + DOWN] = ab["A"].contiguous()
        out[name + UP] = ab["B"].contiguous()
        out[name + ALPHA] = torch.tensor(alpha, dtype=ab["A"].dtype)
    if not out:
        raise ConvertError("the file holds no LoRA weights")
    return out


def kohya_to_diffusers(tensors: dict) -> dict:
    """diffusers/peft-layout tensors (`unet.`/`text_encoder.` + `.lora_A/B.weight`) from kohya tensors,
    with alpha/rank folded into lora_B."""
    modules: dict[str, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        parts = split_kohya_key(key)
        if parts is None:
            raise ConvertError(f"{key}: not a kohya LoRA key")
        modules.setdefault(parts[0], {})[parts[1]] = tensor
    out = {}
    sdxl = lora_sdxl.is_sdxl_keys(modules)
    for name, parts in sorted(modules.items()):
        if DOWN not in parts or UP not in parts:
            raise ConvertError(f"{name}: lora_down/lora_up pair is incomplete")
        try:
            if sdxl:
                part, module = lora_sdxl.kohya_sdxl_module(name)
            else:
                prefix, module = module_path_from_kohya(name)
                part = "unet" if prefix == UNET_PREFIX else "text_encoder"
        except LoraFileError as e:
            raise ConvertError(str(e)) from None
        down, up = parts[DOWN], parts[UP]
        rank = down.shape[0]
        scale = float(parts[ALPHA].item()) / rank if ALPHA in parts else 1.0
        out[f"{part}.{module}.lora_A.weight"] = down.contiguous()
        out[f"{part}.{module}.lora_B.weight"] = (up.float() * scale).to(up.dtype).contiguous()
    return out


def _precision_of(tensors: dict) -> str:
    # Heavy: torch only where tensors are made.
    import torch

    dtypes = {t.dtype for t in tensors.values() if t.is_floating_point()}
    if dtypes == {torch.float16}:
        return "fp16"
    if dtypes == {torch.bfloat16}:
        return "bf16"
    return "fp32"


def convert_file(src: str | os.PathLike, dst: str | os.PathLike, *, to: str | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Convert `src` to the `to` layout ("kohya" or "diffusers"; default: the other one) at `dst`.

    The destination is written atomically and never replaced unless `overwrite`. Returns a summary
    (layouts, module count, output path).
    """
    src, dst = Path(src), Path(dst)
    source_layout = detect_layout(src)
    if source_layout == "unknown":
        raise ConvertError(f"{src.name}: neither kohya nor diffusers/peft LoRA layout",
                           hint=f"see: {command('validate', src)}")
    target = to or ("kohya" if source_layout == "diffusers" else "diffusers")
    if target not in LAYOUTS:
        raise ConvertError(f"unknown layout {target!r} (use kohya or diffusers)")
    if target == source_layout:
        raise ConvertError(f"{src.name} is already in the {target} layout")
    if dst.resolve() == src.resolve():
        raise ConvertError("the output must be a different file from the input")
    if dst.exists() and not overwrite:
        raise ConvertError(f"{dst} already exists", hint="choose another name or pass --overwrite")
    if not dst.parent.is_dir():
        raise ConvertError(f"{dst.parent} is not a folder")
    from safetensors.torch import load_file, save  # after the checks: a refusal stays fast

    _, metadata = read_header(src)
    metadata = {str(k): v for k, v in metadata.items() if isinstance(v, str)}
    tensors = load_file(str(src), device="cpu")
    precision = _precision_of(tensors)
    if target == "kohya":
        out = diffusers_to_kohya(tensors, metadata)
        meta = {k: v for k, v in metadata.items() if k not in ("format", ADAPTER_METADATA_KEY)}
        ranks = sorted({t.shape[0] for k, t in out.items() if k.endswith(DOWN)})
        alphas = sorted({float(t.item()) for k, t in out.items() if k.endswith(ALPHA)})
        meta.setdefault("ss_network_module", "networks.lora")
        meta.setdefault("ss_network_dim", str(ranks[-1]))
        meta.setdefault("ss_network_alpha", str(alphas[-1]))
        meta["loradeck_converted_from"] = "diffusers"
        save_kohya_lora(dst, out, meta, precision=precision)
        modules = sum(1 for k in out if k.endswith(DOWN))
    else:
        out = kohya_to_diffusers(tensors)
        meta = {k: v for k, v in metadata.items() if not k.startswith("sshs_")}
        meta["format"] = "pt"
        meta["loradeck_converted_from"] = "kohya"
        try:
            atomic_write_bytes(dst, save(out, meta))
        except OSError as e:
            raise ConvertError(f"cannot write {dst}: {e.strerror or e}") from None
        modules = sum(1 for k in out if k.endswith("lora_A.weight"))
    return {"input": str(src), "output": str(dst), "from": source_layout, "to": target, "modules": modules,
            "precision": precision}
