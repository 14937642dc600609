"""A base model's architecture on the `meta` device: the real classes, shapes and dtypes, no weights.

Built from the same configs loradeck.trainer.train.models loads with, read without reading any weight:

    synthetic:*      loradeck.trainer.train.synthetic_sd.component_configs
    folder           unet/, vae/, text_encoder/ config.json
    single file      tensor shapes from the safetensors header (a .ckpt is memory-mapped, not read),
                     through loradeck.trainer.train.single_file's own config inference
    hub id           the config files of the HF snapshot (only *.json are fetched)

Returns a loradeck.trainer.train.models.BaseModel whose tokenizer is None (a step's token ids are (batch, 77) int64).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loradeck.trainer.errors import ModelError
from loradeck.trainer.train import models, single_file, synthetic_sd


def build(name: str) -> models.BaseModel:
    """The components of base model `name` on the meta device; ModelError when it cannot be read."""
    kind = models.kind_of(name)
    if kind == "synthetic":
        configs = synthetic_sd.component_configs(synthetic_sd.kind_of(name))
        return _assemble(name, kind, configs["unet"], configs["vae"], configs["text_encoder"], configs["scheduler"])
    if kind == "single_file":
        return _single_file(name, Path(name).expanduser())
    folder = Path(name).expanduser() if kind == "folder" else _hub_configs(name)
    return _folder(name, kind, folder)


def _assemble(name: str, kind: str, unet_cfg: dict, vae_cfg: dict, te_cfg: dict, scheduler: dict) -> models.BaseModel:
    import torch  # diffusers, torch, transformers: only when an estimate builds the model (in its child process)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    te_cfg = {k: v for k, v in te_cfg.items() if not k.startswith("_") and k not in ("architectures",)}
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_public(unet_cfg))
        vae = AutoencoderKL.from_config(_public(vae_cfg))
        text_encoder = CLIPTextModel(CLIPTextConfig(**te_cfg))
    for module in (unet, vae, text_encoder):
        module.eval()
    return models.BaseModel(name=name, tokenizer=None, text_encoder=text_encoder, vae=vae, unet=unet,
                            scheduler_config=dict(scheduler), source=kind)


def _public(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is missing: not a diffusers SD1.x model folder",
                         hint="a model folder needs unet/, vae/, text_encoder/ and scheduler/ configs") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{path} cannot be read ({e})") from None


def _folder(name: str, kind: str, folder: Path) -> models.BaseModel:
    return _assemble(name, kind, _read_json(folder / "unet" / "config.json"),
                     _read_json(folder / "vae" / "config.json"), _read_json(folder / "text_encoder" / "config.json"),
                     _read_json(folder / "scheduler" / "scheduler_config.json"))


def _hub_configs(repo_id: str) -> Path:
    import huggingface_hub  # huggingface_hub: only when an estimate builds the model (in its child process)
    from huggingface_hub import constants

    try:
        return Path(huggingface_hub.snapshot_download(
            repo_id, allow_patterns=[p for p in models.HUB_PATTERNS if p.endswith(".json")],
            local_files_only=bool(constants.HF_HUB_OFFLINE)))
    except Exception as e:  # offline miss, 404, gated, no network
        raise ModelError(f"the configs of base model {repo_id} are not available ({type(e).__name__})",
                         hint=f"download it once (hf download {repo_id}) or point --base-model at a local copy") \
            from None


def _single_file(name: str, path: Path) -> models.BaseModel:
    # diffusers: only when an estimate builds the model (in its child process)
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

    shapes = _meta_state_dict(path)
    try:
        unet_sd = {k[len(single_file.UNET):]: v for k, v in shapes.items() if k.startswith(single_file.UNET)}
        vae_sd = {k[len(single_file.VAE):]: v for k, v in shapes.items() if k.startswith(single_file.VAE)}
        te_sd = convert_ldm_clip_checkpoint(shapes)
        te_sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in te_sd.items()}
        t_cfg = single_file.clip_config(te_sd)
        ids = (synthetic_sd.BOS_ID, synthetic_sd.EOS_ID) if t_cfg["vocab_size"] == len(synthetic_sd.VOCAB) \
            else (49406, 49407)
        t_cfg.update(bos_token_id=ids[0], eos_token_id=ids[1])
        return _assemble(name, "single_file", single_file.unet_config(unet_sd), single_file.vae_config(vae_sd),
                         t_cfg, dict(synthetic_sd.SCHEDULER_CONFIG))
    except (KeyError, StopIteration, ValueError, IndexError) as e:
        raise ModelError(f"{path.name}: not an SD1.x layout ({type(e).__name__}: {str(e)[:120]})") from None


def _meta_state_dict(path: Path) -> dict[str, Any]:
    """Key -> meta tensor of the checkpoint's shape and dtype, without reading the weights."""
    import torch  # torch: only when an estimate builds the model (in its child process)

    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open  # safetensors: only when an estimate builds the model (in its child process)

        try:
            with safe_open(str(path), "pt") as f:
                out = {}
                for k in f.keys():
                    sl = f.get_slice(k)
                    out[k] = torch.empty(sl.get_shape(), device="meta", dtype=_st_dtype(sl.get_dtype()))
                return out
        except Exception as e:
            raise ModelError(f"{path.name} is not a readable safetensors file ({type(e).__name__})") from None
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise ModelError(f"{path.name}: refusing to unpickle it ({type(e).__name__})",
                         hint="convert it to .safetensors with a tool you trust") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    return {k: torch.empty(v.shape, device="meta", dtype=v.dtype) for k, v in data.items()
            if isinstance(v, torch.Tensor)}


def _st_dtype(name: str):
    import torch  # torch: only when an estimate builds the model (in its child process)

    return {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
            "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "I8": torch.int8,
            "BOOL": torch.bool}.get(name, torch.float32)
