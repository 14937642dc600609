"""A base model's architecture on the `meta` device: the real classes, shapes and dtypes, no weights.

Built from the same configs loradeck.trainer.train.models loads with, read without reading any weight:

    synthetic:*      loradeck.trainer.train.synthetic_sd.component_configs
    folder           unet/, vae/, text_encoder/ (SDXL: text_encoder_2/) config.json
    single file      tensor shapes from the safetensors header (a .ckpt is memory-mapped, not read),
                     through loradeck.trainer.train.single_file's own config inference (SD1.x:
                     unet_config / vae_config / clip_config; SDXL's SGM layout: sdxl_unet_config and
                     open_clip_config as single_file.load_sdxl reads them)
    hub id           the config files of the HF snapshot (only *.json are fetched)

Returns a loradeck.trainer.train.models.BaseModel with its family (loradeck.trainer.config.model_family) set and
its tokenizers None (a step's token ids are (batch, 77) int64). SDXL adds text_encoder_2, a
transformers CLIPTextModelWithProjection.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loradeck.trainer.config import model_family
from loradeck.trainer.errors import ModelError
from loradeck.trainer.train import models, single_file, synthetic_sd


def build(name: str) -> models.BaseModel:
    """The components of base model `name` on the meta device; ModelError when it cannot be read."""
    kind = models.kind_of(name)
    if kind == "synthetic":
        configs = synthetic_sd.component_configs(synthetic_sd.kind_of(name))
        return _assemble(name, kind, model_family.detect(name) or model_family.SD1, configs["unet"],
                         configs["vae"], configs["text_encoder"], configs["scheduler"],
                         te2_cfg=configs.get("text_encoder_2"))
    if kind == "single_file":
        return _single_file(name, Path(name).expanduser())
    folder = Path(name).expanduser() if kind == "folder" else _hub_configs(name)
    return _folder(name, kind, folder)


def _assemble(name: str, kind: str, family: str, unet_cfg: dict, vae_cfg: dict, te_cfg: dict, scheduler: dict,
              *, te2_cfg: dict | None = None) -> models.BaseModel:
    import torch  # diffusers, torch, transformers: only when an estimate builds the model (in its child process)
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    if family == model_family.SDXL and te2_cfg is None:
        raise ModelError(f"base model {name}: an SDXL model without a second text encoder config")
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_public(unet_cfg))
        vae = AutoencoderKL.from_config(_public(vae_cfg))
        text_encoder = CLIPTextModel(CLIPTextConfig(**_clip_args(te_cfg)))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig(**_clip_args(te2_cfg))) \
            if family == model_family.SDXL else None
    for module in (unet, vae, text_encoder, text_encoder_2):
        if module is not None:
            module.eval()
    return models.BaseModel(name=name, tokenizer=None, text_encoder=text_encoder, vae=vae, unet=unet,
                            scheduler_config=dict(scheduler), source=kind, family=family,
                            text_encoder_2=text_encoder_2)


def _public(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _clip_args(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures",)}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is missing: not a diffusers SD1.x model folder",
                         hint="a model folder needs unet/, vae/, text_encoder/ and scheduler/ configs") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{path} cannot be read ({e})") from None


def _folder(name: str, kind: str, folder: Path) -> models.BaseModel:
    family = model_family.from_folder(folder) or model_family.SD1
    te2 = _read_json(folder / "text_encoder_2" / "config.json") if family == model_family.SDXL else None
    return _assemble(name, kind, family, _read_json(folder / "unet" / "config.json"),
                     _read_json(folder / "vae" / "config.json"), _read_json(folder / "text_encoder" / "config.json"),
                     _read_json(folder / "scheduler" / "scheduler_config.json"), te2_cfg=te2)


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
    family = model_family.from_single_file(path) or \
        (model_family.SDXL if any(k.startswith(single_file.SDXL_TE2) for k in shapes) else model_family.SD1)
    if family == model_family.SDXL:
        return _single_file_sdxl(name, path, shapes)
    try:
        unet_sd = {k[len(single_file.UNET):]: v for k, v in shapes.items() if k.startswith(single_file.UNET)}
        vae_sd = {k[len(single_file.VAE):]: v for k, v in shapes.items() if k.startswith(single_file.VAE)}
        te_sd = convert_ldm_clip_checkpoint(shapes)
        te_sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in te_sd.items()}
        t_cfg = single_file.clip_config(te_sd)
        ids = (synthetic_sd.BOS_ID, synthetic_sd.EOS_ID) if t_cfg["vocab_size"] == len(synthetic_sd.VOCAB) \
            else (49406, 49407)
        t_cfg.update(bos_token_id=ids[0], eos_token_id=ids[1])
        return _assemble(name, "single_file", model_family.SD1, single_file.unet_config(unet_sd),
                         single_file.vae_config(vae_sd), t_cfg, dict(synthetic_sd.SCHEDULER_CONFIG))
    except (KeyError, StopIteration, ValueError, IndexError) as e:
        raise ModelError(f"{path.name}: not an SD1.x layout ({type(e).__name__}: {str(e)[:120]})") from None


def _single_file_sdxl(name: str, path: Path, shapes: dict[str, Any]) -> models.BaseModel:
    """An SGM-layout SDXL checkpoint: the configs single_file.load_sdxl reads, off the meta state dict."""
    # diffusers: only when an estimate builds the model (in its child process)
    from diffusers.loaders.single_file_utils import convert_ldm_clip_checkpoint

    try:
        te2_sd = {k[len(single_file.SDXL_TE2):]: v for k, v in shapes.items() if k.startswith(single_file.SDXL_TE2)}
        t2_cfg = single_file.open_clip_config(te2_sd)
        unet_sd = {k[len(single_file.UNET):]: v for k, v in shapes.items() if k.startswith(single_file.UNET)}
        u_cfg = single_file.sdxl_unet_config(unet_sd, t2_cfg["projection_dim"])
        vae_sd = {k[len(single_file.VAE):]: v for k, v in shapes.items() if k.startswith(single_file.VAE)}
        v_cfg = dict(single_file.vae_config(vae_sd), scaling_factor=0.13025, sample_size=1024)
        te1_sd = convert_ldm_clip_checkpoint(shapes, remove_prefix=single_file.SDXL_TE1)
        te1_sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in te1_sd.items()}
        t1_cfg = single_file.clip_config(te1_sd)
    except (KeyError, StopIteration, ValueError, IndexError) as e:
        raise ModelError(f"{path.name}: not an SDXL layout ({type(e).__name__}: {str(e)[:120]})") from None
    synthetic_vocab = t1_cfg["vocab_size"] == len(synthetic_sd.VOCAB)
    ids = dict(bos_token_id=synthetic_sd.BOS_ID, eos_token_id=synthetic_sd.EOS_ID) if synthetic_vocab \
        else dict(bos_token_id=49406, eos_token_id=49407)
    return _assemble(name, "single_file", model_family.SDXL, u_cfg, v_cfg, {**ids, **t1_cfg},
                     dict(synthetic_sd.SCHEDULER_CONFIG), te2_cfg={**ids, **t2_cfg})


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
