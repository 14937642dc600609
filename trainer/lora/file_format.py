"""The exported LoRA file: kohya key layout, ss_* metadata, hashes, reading and writing.

One `.safetensors` file that A1111, ComfyUI, kohya tools and diffusers' `load_lora_weights` all load
(ARCHITECTURE.md section 6):

    lora_unet_<module path, "." -> "_">.lora_down.weight   (rank, in[, kh, kw])
    lora_unet_<module path, "." -> "_">.lora_up.weight     (out, rank[, 1, 1])
    lora_unet_<module path, "." -> "_">.alpha              0-dim; scale = alpha / rank
    lora_te_<...>                                          the same for the CLIP text encoder

Header metadata is strings only: the `ss_*` keys kohya's sd-scripts writes, `modelspec.*`, loradeck's
own `loradeck_*` keys, and `sshs_model_hash` / `sshs_legacy_hash` (the hashes the A1111 additional
networks extension and kohya precompute).

torch and safetensors.torch are imported inside the functions that need them; `read_header` is pure
Python so listings (the TUI, the shared folder) stay cheap.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from loradeck.trainer import __version__
from loradeck.trainer.atomic import atomic_write_bytes
from loradeck.trainer.errors import LoradeckError

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

UNET_PREFIX = "lora_unet"
TE_PREFIX = "lora_te"
DOWN, UP, ALPHA = ".lora_down.weight", ".lora_up.weight", ".alpha"
NETWORK_MODULE = "networks.lora"
CLIP_TEXT_ROOT = "text_model."
LORADECK_KEY_PREFIX = "loradeck_"
SAVE_PRECISIONS = ("fp16", "bf16", "fp32")
# A safetensors header bigger than this is not a LoRA header (guards json.loads on garbage).
MAX_HEADER_BYTES = 100 * 1024 * 1024

# Prefixes peft / diffusers put in front of the module path.
_PEFT_PREFIXES = ("base_model.model.", "unet.", "text_encoder.")


class LoraFileError(LoradeckError):
    """A LoRA file that cannot be read, or tensors that cannot be written as one."""


def kohya_key(prefix: str, module_path: str) -> str:
    """The kohya module key: `kohya_key("lora_unet", "down_blocks.0.attentions.0.proj_in")`
    -> `"lora_unet_down_blocks_0_attentions_0_proj_in"`."""
    if prefix not in (UNET_PREFIX, TE_PREFIX):
        raise ValueError(f"unknown kohya prefix {prefix!r}")
    return f"{prefix}_{module_path.replace('.', '_')}"


# Names in SD 1.x UNet / CLIP module paths that contain "_" themselves, so a kohya key (where every
# "." became "_") can be turned back into the module path. Longest match wins.
_COMPOUND_NAMES = frozenset({
    "down_blocks", "up_blocks", "mid_block", "transformer_blocks", "proj_in", "proj_out", "to_q", "to_k", "to_v",
    "to_out", "time_emb_proj", "conv_shortcut", "conv_in", "conv_out", "conv_norm_out", "conv_act",
    "time_embedding", "time_proj", "linear_1", "linear_2", "text_model", "self_attn", "q_proj", "k_proj", "v_proj",
    "out_proj", "final_layer_norm", "layer_norm1", "layer_norm2", "token_embedding", "position_embedding",
    "activation_fn", "add_embedding", "encoder_hid_proj", "add_k_proj", "add_v_proj", "to_add_out",
    "text_projection",
})
_LDM_BLOCKS = ("input_blocks_", "middle_block_", "output_blocks_")
_MAX_COMPOUND_PARTS = max(len(n.split("_")) for n in _COMPOUND_NAMES)


def module_path_from_kohya(module_key: str) -> tuple[str, str]:
    """Invert `kohya_key`: `"lora_unet_mid_block_attentions_0_proj_in"` -> (`"lora_unet"`, `"mid_block.attentions.0.proj_in"`).

    Raises LoraFileError for a key that is not lora_unet_/lora_te_ (lora_te1_/lora_te2_ are SDXL).
    """
    for prefix in (UNET_PREFIX, TE_PREFIX):
        if module_key.startswith(prefix + "_"):
            rest = module_key[len(prefix) + 1:]
            break
    else:
        raise LoraFileError(f"{module_key}: not a lora_unet_ or lora_te_ key")
    if rest.startswith(_LDM_BLOCKS):
        raise LoraFileError(f"{module_key}: original-SD (LDM) module name; diffusers drops these keys,"
                            " only diffusers module names (down_blocks/mid_block/up_blocks) load everywhere")
    parts = rest.split("_")
    out, i = [], 0
    while i < len(parts):
        for n in range(min(_MAX_COMPOUND_PARTS, len(parts) - i), 0, -1):
            candidate = "_".join(parts[i:i + n])
            if n == 1 or candidate in _COMPOUND_NAMES:
                out.append(candidate)
                i += n
                break
    return prefix, ".".join(out)


def split_kohya_key(key: str) -> tuple[str, str] | None:
    """`"lora_unet_x.lora_down.weight"` -> (`"lora_unet_x"`, `".lora_down.weight"`); None if no known suffix."""
    for suffix in (DOWN, UP, ALPHA):
        if key.endswith(suffix):
            return key[: -len(suffix)], suffix
    return None


def _split_peft_key(key: str) -> tuple[str, str]:
    """`"...to_q.lora_A.default.weight"` -> (`"...to_q"`, `"A"`); other keys raise LoraFileError."""
    for prefix in _PEFT_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix):]
    parts = key.split(".")
    for i, part in enumerate(parts):
        if part in ("lora_A", "lora_B"):
            tail = parts[i + 1:]
            # "weight", or "<adapter>.weight" when the state dict kept the adapter name.
            if tail and tail[-1] == "weight" and len(tail) <= 2:
                return ".".join(parts[:i]), part[-1]
    if "lora_magnitude_vector" in key:
        raise LoraFileError(f"{key}: DoRA adapters cannot be written as a kohya LoRA")
    if "lora_embedding" in key:
        raise LoraFileError(f"{key}: embedding LoRA layers cannot be written as a kohya LoRA")
    raise LoraFileError(f"{key}: not a peft LoRA weight (expected ...lora_A.weight / ...lora_B.weight)")


def _convert_part(state: Mapping[str, Any], prefix: str, alpha: float) -> dict[str, "Tensor"]:
    # Heavy: torch only where tensors are made.
    import torch

    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in state.items():
        module, which = _split_peft_key(key)
        pairs.setdefault(module, {})[which] = tensor
    out: dict[str, torch.Tensor] = {}
    for module, ab in sorted(pairs.items()):
        if prefix == TE_PREFIX and not module.startswith(CLIP_TEXT_ROOT):
            # transformers 5 dropped the `text_model.` level of CLIPTextModel; the file keeps kohya's names.
            module = CLIP_TEXT_ROOT + module
        if set(ab) != {"A", "B"}:
            missing = "lora_B" if "A" in ab else "lora_A"
            raise LoraFileError(f"{module}: {missing} weight is missing from the adapter state")
        down, up = ab["A"], ab["B"]
        if down.shape[0] != up.shape[1]:
            raise LoraFileError(f"{module}: lora_A rank {down.shape[0]} does not match lora_B rank {up.shape[1]}")
        key = kohya_key(prefix, module)
        out[key + DOWN] = down.detach().to("cpu").contiguous()
        out[key + UP] = up.detach().to("cpu").contiguous()
        out[key + ALPHA] = torch.tensor(float(alpha), dtype=torch.float32)
    return out


def peft_to_kohya(unet_lora: dict, text_encoder_lora: dict | None, *, alpha: float) -> dict[str, "Tensor"]:
    """Turn peft state dicts (`peft.get_peft_model_state_dict(unet)` / `(text_encoder)`) into kohya tensors.

    Keys may carry `base_model.model.` / `unet.` / `text_encoder.` prefixes and an adapter name
    (`lora_A.default.weight`). Every module gets `.lora_down.weight`, `.lora_up.weight` and a 0-dim
    `.alpha` = `alpha`; conv LoRA weights keep their 4-D shapes. Raises LoraFileError on keys that are
    not plain LoRA weights (DoRA, embeddings) or on an unpaired A/B.
    """
    if not unet_lora and not text_encoder_lora:
        raise LoraFileError("the adapter has no LoRA weights")
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise LoraFileError(f"alpha must be a positive number, got {alpha!r}")
    tensors = _convert_part(unet_lora or {}, UNET_PREFIX, alpha)
    tensors.update(_convert_part(text_encoder_lora or {}, TE_PREFIX, alpha))
    return tensors


def _s(value: Any) -> str:
    """Metadata values are strings; None becomes "None" and booleans "True"/"False", as kohya writes them."""
    return str(value)


def kohya_metadata(*, config: dict, base_model: str, base_model_version: str, resolution: int,
                   tag_frequency: dict[str, dict[str, int]], num_train_images: int, steps: int, epochs: int,
                   output_name: str, extra: dict | None = None,
                   dataset_dirs: dict[str, dict[str, int]] | None = None) -> dict[str, str]:
    """The header metadata of an exported LoRA: kohya's `ss_*` keys, `modelspec.*`, loradeck's own keys.

    `config` is a TrainConfig dict (loradeck.trainer.config.train_config); `tag_frequency` maps a dataset folder name to
    tag counts (kohya's `ss_tag_frequency`); `extra` adds loradeck keys (`{"trigger": "x"}` is written
    as `loradeck_trigger`; `{"training_started_at": t}` sets ss_training_started_at). Every value is a string.
    """
    c = dict(config)
    rank = c.get("rank", 16)
    alpha = c.get("alpha", rank)
    lr = c.get("learning_rate", 1e-4)
    te_lr = c.get("text_encoder_lr") if c.get("text_encoder_lr") is not None else lr
    train_te = bool(c.get("train_text_encoder", False))
    extra = dict(extra or {})
    now = time.time()
    # extra["training_started_at"] (Unix seconds) is when the run began; without it, now.
    started = float(extra.pop("training_started_at", None) or c.get("started_at") or now)
    # kohya's ss_dataset_dirs: {folder: {n_repeats, img_count (distinct images)}}. The trainer passes
    # it (one folder per kohya repeat count); otherwise (a fill for an older file) one folder is assumed.
    if dataset_dirs is None:
        single = len(tag_frequency) == 1
        dataset_dirs = {name: {"n_repeats": c.get("repeats", 1), "img_count": num_train_images if single else None}
                        for name in tag_frequency}
    network_args = {"target_modules": c.get("target_modules", "attention")}
    meta: dict[str, Any] = {
        "ss_session_id": str(int(started)),
        "ss_training_started_at": started,
        "ss_training_finished_at": now,
        "ss_output_name": output_name,
        "ss_sd_model_name": base_model,
        "ss_base_model_version": base_model_version,
        "ss_v2": base_model_version.startswith("sd_v2"),
        "ss_network_module": NETWORK_MODULE,
        "ss_network_dim": rank,
        "ss_network_alpha": float(alpha),
        "ss_network_args": json.dumps(network_args),
        "ss_network_train_unet_only": not train_te,
        "ss_network_train_text_encoder_only": False,
        "ss_learning_rate": lr,
        "ss_unet_lr": lr,
        "ss_text_encoder_lr": te_lr if train_te else None,
        "ss_lr_scheduler": c.get("lr_scheduler", "constant"),
        "ss_lr_warmup_steps": c.get("lr_warmup_steps", 0),
        "ss_optimizer": _optimizer_name(c.get("optimizer", "adamw"), c.get("weight_decay")),
        "ss_max_grad_norm": c.get("max_grad_norm", 1.0),
        "ss_mixed_precision": c.get("mixed_precision", "fp16"),
        "ss_full_fp16": False,
        "ss_save_precision": c.get("save_precision", "fp16"),
        "ss_gradient_checkpointing": bool(c.get("gradient_checkpointing", False)),
        "ss_gradient_accumulation_steps": c.get("gradient_accumulation_steps", 1),
        "ss_batch_size_per_device": c.get("batch_size", 1),
        "ss_total_batch_size": c.get("batch_size", 1) * c.get("gradient_accumulation_steps", 1)
        * max(1, c.get("gpus", 1)),
        "ss_num_train_images": num_train_images,
        "ss_num_reg_images": 0,
        "ss_num_batches_per_epoch": max(1, steps // max(1, epochs)) if steps else 0,
        "ss_num_epochs": epochs,
        "ss_epoch": epochs,
        "ss_max_train_steps": c.get("max_train_steps") or steps,
        "ss_steps": steps,
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_seed": c.get("seed", 42),
        "ss_noise_offset": c.get("noise_offset", 0.0),
        "ss_min_snr_gamma": c.get("min_snr_gamma") or None,
        "ss_caption_dropout_rate": c.get("caption_dropout_rate", 0.0),
        "ss_shuffle_caption": bool(c.get("shuffle_caption", False)),
        "ss_keep_tokens": c.get("keep_tokens", 0),
        "ss_cache_latents": bool(c.get("cache_latents", False)),
        "ss_clip_skip": None,
        "ss_prior_loss_weight": 1.0,
        "ss_enable_bucket": False,
        "ss_tag_frequency": json.dumps(tag_frequency, ensure_ascii=False),
        "ss_dataset_dirs": json.dumps(dataset_dirs, ensure_ascii=False),
        "ss_training_comment": c.get("training_comment", "trained with loradeck"),
        "modelspec.sai_model_spec": "1.0.0",
        "modelspec.architecture": _modelspec_arch(base_model_version),
        "modelspec.implementation": "diffusers",
        "modelspec.title": output_name,
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)),
        "loradeck_version": __version__,
        "loradeck_config": json.dumps(c, ensure_ascii=False, default=str, sort_keys=True),
    }
    if c.get("prediction_type") in ("epsilon", "v_prediction"):
        meta["modelspec.prediction_type"] = c["prediction_type"]
    for key, value in extra.items():
        name = key if key.startswith(LORADECK_KEY_PREFIX) or key.startswith("modelspec.") else LORADECK_KEY_PREFIX + key
        meta[name] = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if key == "trigger" and value:
            meta["modelspec.trigger_phrase"] = value if isinstance(value, str) else ", ".join(value)
    return {k: _s(v) for k, v in meta.items()}


def _optimizer_name(optimizer: str, weight_decay: Any) -> str:
    names = {"adamw": "torch.optim.adamw.AdamW", "adamw8bit": "bitsandbytes.optim.adamw.AdamW8bit"}
    name = names.get(optimizer, optimizer)
    return f"{name}(weight_decay={weight_decay})" if weight_decay is not None else name


def _modelspec_arch(base_model_version: str) -> str:
    if base_model_version.startswith("sd_v2"):
        return "stable-diffusion-v2-512/lora"
    if base_model_version.startswith("sdxl"):
        return "stable-diffusion-xl-v1-base/lora"
    return "stable-diffusion-v1/lora"


def hashes_of_bytes(data: bytes) -> tuple[str, str]:
    """(model hash, legacy hash) of serialized safetensors bytes, by the additional-networks rule:
    model hash = sha256 of everything after the header; legacy = first 8 hex of sha256 of the
    64 KiB at offset 1 MiB."""
    (n,) = struct.unpack("<Q", data[:8])
    model = hashlib.sha256(memoryview(data)[8 + n:]).hexdigest()
    legacy = hashlib.sha256(memoryview(data)[0x100000:0x110000]).hexdigest()[:8]
    return model, legacy


def file_model_hash(path: str | os.PathLike) -> str:
    """sha256 of the bytes after the safetensors header of the file at `path` (`sshs_model_hash`)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        fh.seek(8 + n)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def save_kohya_lora(path, tensors: dict, metadata: dict[str, str], *, precision: str = "fp16",
                    perms: int | None = None) -> str:
    """Write `tensors` + `metadata` to `path` atomically as one safetensors file; returns sshs_model_hash.

    Floating tensors are cast to `precision` (fp16, bf16 or fp32). `sshs_model_hash` and
    `sshs_legacy_hash` are computed the way kohya does it (over the tensors serialized with only the
    `ss_*` metadata) and added to the header; the model hash equals the sha256 of the written file's
    bytes after its header. `perms` sets the file mode (e.g. 0o664).
    """
    # Heavy: torch only where tensors are made.
    import torch
    from safetensors.torch import save

    if precision not in SAVE_PRECISIONS:
        raise LoraFileError(f"save precision {precision!r} is not one of {', '.join(SAVE_PRECISIONS)}")
    if not tensors:
        raise LoraFileError("no tensors to save")
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise LoraFileError(f"metadata values must be strings: {', '.join(map(str, bad[:5]))}")
    dtype = getattr(torch, _DTYPES[precision])
    cast = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().to("cpu")).contiguous()
            for k, v in tensors.items()}
    training_meta = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    model_hash, legacy_hash = hashes_of_bytes(save(cast, training_meta))
    full_meta = {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash}
    data = save(cast, full_meta)
    try:
        atomic_write_bytes(path, data, perms=perms)
    except OSError as e:
        raise LoraFileError(f"cannot write {path}: {e.strerror or e}") from e
    return model_hash


def _int_list(value: Any, length: int | None = None) -> bool:
    return (isinstance(value, list) and (length is None or len(value) == length)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value))


def read_header(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str]]:
    """The safetensors header without loading tensors (pure Python): ({key: {dtype, shape, data_offsets}},
    metadata). Raises LoraFileError with the reason on a missing, empty, truncated or garbled file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise LoraFileError(f"{path.name}: empty or truncated file ({size} bytes), not a safetensors file")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
                raise LoraFileError(f"{path.name}: not a safetensors file (bad header length)")
            raw = fh.read(n)
    except FileNotFoundError:
        raise LoraFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise LoraFileError(f"{path}: is a folder, not a LoRA file") from None
    except OSError as e:
        raise LoraFileError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LoraFileError(f"{path.name}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise LoraFileError(f"{path.name}: not a safetensors file (header is not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise LoraFileError(f"{path.name}: header metadata is not a JSON object")
    end = 0
    for key, info in header.items():
        if not (isinstance(info, dict) and isinstance(info.get("dtype"), str) and _int_list(info.get("shape"))
                and _int_list(info.get("data_offsets"), 2)
                and 0 <= info["data_offsets"][0] <= info["data_offsets"][1]):
            raise LoraFileError(f"{path.name}: header entry {key!r} is malformed")
        end = max(end, info["data_offsets"][1])
    if 8 + n + end > size:
        raise LoraFileError(f"{path.name}: truncated ({size} bytes, the header needs {8 + n + end})")
    return header, metadata


def header_bytes(tensor_info: Mapping[str, dict], metadata: Mapping[str, str] | None) -> bytes:
    """A safetensors header as the safetensors library writes it: 8-byte little-endian length, then
    compact JSON (`__metadata__` first, tensors in the given order) padded with spaces to 8 bytes."""
    doc: dict[str, Any] = {}
    if metadata:
        doc["__metadata__"] = dict(metadata)
    for key, info in tensor_info.items():
        doc[key] = {"dtype": info["dtype"], "shape": list(info["shape"]), "data_offsets": list(info["data_offsets"])}
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def data_offset(path: str | os.PathLike) -> int:
    """Where the tensor bytes of a safetensors file start (8 + header length)."""
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
    return 8 + n


def copy_with_metadata(src: str | os.PathLike, out: Any, metadata: Mapping[str, str], *,
                       chunk: int = 1 << 20) -> None:
    """Write `src` to the binary file object `out` with its header metadata replaced by `metadata`.

    The tensor bytes are copied unchanged (streamed, so large files do not sit in memory), so the
    model hash stays the same. Pure Python: no torch.
    """
    info, _ = read_header(src)
    out.write(header_bytes(info, metadata))
    with open(src, "rb") as fh:
        fh.seek(data_offset(src))
        for block in iter(lambda: fh.read(chunk), b""):
            out.write(block)


def legacy_hash(src: str | os.PathLike, metadata: Mapping[str, str]) -> str:
    """`sshs_legacy_hash` by kohya's rule for the tensors of `src`: the first 8 hex digits of the
    sha256 of the 64 KiB at offset 1 MiB of the file serialized with only the `ss_*` metadata."""
    info, _ = read_header(src)
    head = header_bytes(info, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    start, length = 0x100000, 0x10000
    piece = head[start:start + length]
    if len(piece) < length:
        with open(src, "rb") as fh:
            fh.seek(data_offset(src) + max(0, start - len(head)))
            piece += fh.read(length - len(piece))
    return hashlib.sha256(piece).hexdigest()[:8]


def read_lora(path) -> tuple[dict, dict[str, str]]:
    """Load a LoRA file: (tensors on CPU, header metadata). LoraFileError on a bad file."""
    # Heavy: safetensors.torch brings torch.
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    _, metadata = read_header(path)
    try:
        tensors = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise LoraFileError(f"{Path(path).name}: cannot load tensors ({' '.join(str(e).split())})") from None
    return tensors, {str(k): v for k, v in metadata.items()}
