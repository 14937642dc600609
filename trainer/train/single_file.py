"""Single-file SD1.x checkpoints (A1111 / original LDM layout), loaded with no network.

diffusers' `from_single_file` fetches the component configs from the Hub; here the configs are read
off the checkpoint itself instead: channel widths, levels, layers per block, attention placement,
cross-attention width, linear-vs-conv projections (UNet), the VAE's widths and latent channels, and
the CLIP text encoder's sizes all follow from tensor shapes. What shapes cannot tell is taken from
the SD1.x convention: 8 attention heads, 32 norm groups, VAE scale 0.18215, CLIP heads of width 64,
the SD1 DDPM schedule. The keys are then converted with diffusers' own LDM->diffusers converters.

Prediction type: `modelspec.prediction_type` in the file's metadata, or a sibling `<stem>.yaml`
with `parameterization: "v"` (the A1111 convention for v-models); epsilon otherwise.

The one thing a checkpoint does not contain is the tokenizer's BPE vocabulary: it comes from the HF
cache (`openai/clip-vit-large-patch14`), or is the synthetic byte tokenizer when the embedding size
says the model was built with it. Missing offline -> ModelError saying what to download.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

from loradeck.trainer.errors import ModelError
from loradeck.trainer.train import synthetic_sd

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP_PREFIXES = ("cond_stage_model.transformer.text_model.", "cond_stage_model.transformer.")
CLIP_TOKENIZER_REPO = "openai/clip-vit-large-patch14"


def read_state_dict(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensors, metadata) of a checkpoint file: safetensors, or a pickle loaded with weights_only=True."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open  # safetensors: only when a single-file checkpoint loads

        try:
            with safe_open(str(path), "pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        except Exception as e:
            raise ModelError(f"{path.name} is not a readable safetensors file ({type(e).__name__})") from None
    import torch  # torch: only when a single-file checkpoint loads

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelError(f"{path.name}: refusing to unpickle it (it holds more than tensors: {type(e).__name__})",
                         hint="convert it to .safetensors with a tool you trust, then use that file") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} does not hold a state dict")
    return data, {}


def unet_config(sd: dict[str, Any]) -> dict[str, Any]:
    """UNet2DConditionModel arguments from an LDM UNet state dict (keys without the prefix)."""
    conv_in = sd["input_blocks.0.0.weight"]
    levels: list[list[tuple[int, bool]]] = [[]]
    n_input = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("input_blocks."))
    for i in range(1, n_input):
        if f"input_blocks.{i}.0.op.weight" in sd:
            levels.append([])
            continue
        levels[-1].append((sd[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0],
                           f"input_blocks.{i}.1.proj_in.weight" in sd))
    attn = [k for k in sd if k.endswith("attn2.to_k.weight")]
    proj = next(sd[k] for k in sd if k.endswith("proj_in.weight"))
    has_attn = [lvl[0][1] for lvl in levels]
    return {
        "sample_size": 64, "in_channels": conv_in.shape[1], "out_channels": sd["out.2.weight"].shape[0],
        "layers_per_block": len(levels[0]), "block_out_channels": [lvl[0][0] for lvl in levels],
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)],
        "cross_attention_dim": sd[attn[0]].shape[1], "use_linear_projection": proj.dim() == 2,
        "attention_head_dim": 8, "norm_num_groups": 32,
    }


def vae_config(sd: dict[str, Any]) -> dict[str, Any]:
    n = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.down."))
    per_level = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("encoder.down.0.block."))
    return {
        "in_channels": sd["encoder.conv_in.weight"].shape[1], "out_channels": sd["decoder.conv_out.weight"].shape[0],
        "latent_channels": sd["post_quant_conv.weight"].shape[0],
        "block_out_channels": [sd[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] for i in range(n)],
        "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
        "layers_per_block": per_level, "norm_num_groups": 32, "sample_size": 512, "scaling_factor": 0.18215,
    }


def clip_config(sd: dict[str, Any]) -> dict[str, Any]:
    """CLIPTextConfig arguments from the text-encoder keys (`text_model.` prefix)."""
    emb = sd["text_model.embeddings.token_embedding.weight"]
    layers = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers."))
    hidden = emb.shape[1]
    return {
        "vocab_size": emb.shape[0], "hidden_size": hidden, "num_hidden_layers": layers,
        "intermediate_size": sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
        "num_attention_heads": max(1, hidden // 64), "projection_dim": hidden,
        "max_position_embeddings": sd["text_model.embeddings.position_embedding.weight"].shape[0],
        "hidden_act": "quick_gelu",
    }


def prediction_type(path: Path, metadata: dict[str, str]) -> str:
    if metadata.get("modelspec.prediction_type") in ("epsilon", "v_prediction", "v"):
        return "v_prediction" if metadata["modelspec.prediction_type"].startswith("v") else "epsilon"
    yaml = path.with_suffix(".yaml")
    if yaml.is_file() and re.search(r"parameterization:\s*[\"']?v[\"']?\s*$", yaml.read_text(errors="replace"),
                                     re.MULTILINE):
        return "v_prediction"
    return "epsilon"


def tokenizer_for(vocab_size: int):
    from transformers import CLIPTokenizer  # transformers: only when a single-file checkpoint loads

    if vocab_size == len(synthetic_sd.VOCAB):
        with tempfile.TemporaryDirectory(prefix="loradeck-tok-") as tmp:
            return CLIPTokenizer.from_pretrained(synthetic_sd.write_tokenizer(Path(tmp)), model_max_length=77)
    from huggingface_hub import constants  # huggingface_hub: only when a single-file checkpoint loads

    try:
        return CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_REPO, local_files_only=bool(constants.HF_HUB_OFFLINE))
    except Exception:
        raise ModelError(
            "a single-file checkpoint has no tokenizer vocabulary, and the CLIP tokenizer is not in the "
            "Hugging Face cache",
            hint=f"download it once: hf download {CLIP_TOKENIZER_REPO} vocab.json merges.txt "
                 "tokenizer_config.json special_tokens_map.json") from None


def load(path: Path) -> dict[str, Any]:
    """The components of an SD1.x single-file checkpoint, as loradeck.trainer.train.models.BaseModel fields."""
    # diffusers, transformers: only when a single-file checkpoint loads
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    ckpt, metadata = read_state_dict(path)
    if not any(k.startswith(UNET) for k in ckpt) or not any(k.startswith(VAE) for k in ckpt):
        raise ModelError(f"{path.name} is not a full SD1.x checkpoint (no model.diffusion_model / "
                         "first_stage_model weights)", hint="is it a LoRA or a VAE? use a base model file")
    if not any(k.startswith(CLIP_PREFIXES[1]) for k in ckpt):
        raise ModelError(f"{path.name} has no CLIP text encoder under cond_stage_model.transformer: "
                         "only SD1.x checkpoints are supported")
    try:
        u_cfg = unet_config({k[len(UNET):]: v for k, v in ckpt.items() if k.startswith(UNET)})
        v_cfg = vae_config({k[len(VAE):]: v for k, v in ckpt.items() if k.startswith(VAE)})
        te_sd = convert_ldm_clip_checkpoint(ckpt)
        te_sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in te_sd.items()}
        t_cfg = clip_config(te_sd)
        unet = UNet2DConditionModel(**u_cfg)
        vae = AutoencoderKL(**v_cfg)
        text_encoder = CLIPTextModel(CLIPTextConfig(bos_token_id=synthetic_sd.BOS_ID if t_cfg["vocab_size"] ==
                                                    len(synthetic_sd.VOCAB) else 49406,
                                                    eos_token_id=synthetic_sd.EOS_ID if t_cfg["vocab_size"] ==
                                                    len(synthetic_sd.VOCAB) else 49407, **t_cfg))
        _load_strict(unet, convert_ldm_unet_checkpoint(ckpt, u_cfg), "UNet")
        _load_strict(vae, convert_ldm_vae_checkpoint(ckpt, v_cfg), "VAE")
        if not next(iter(text_encoder.state_dict())).startswith("text_model."):  # transformers >= 5 naming
            te_sd = {k[len("text_model."):]: v for k, v in te_sd.items()}
        _load_strict(text_encoder, te_sd, "text encoder",
                     ignore=("text_model.embeddings.position_ids", "embeddings.position_ids"))
    except ModelError:
        raise
    except (KeyError, StopIteration, ValueError, RuntimeError, IndexError) as e:
        raise ModelError(f"{path.name}: not an SD1.x layout this loader understands ({type(e).__name__}: "
                         f"{str(e)[:120]})") from None
    scheduler = dict(synthetic_sd.SCHEDULER_CONFIG, prediction_type=prediction_type(path, metadata))
    for module in (unet, vae, text_encoder):
        module.eval()
    return {"tokenizer": tokenizer_for(t_cfg["vocab_size"]), "text_encoder": text_encoder, "vae": vae,
            "unet": unet, "scheduler_config": scheduler}


def _load_strict(module, state: dict[str, Any], label: str, ignore: tuple[str, ...] = ()) -> None:
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if k not in ignore]
    unexpected = [k for k in result.unexpected_keys if k not in ignore]
    if missing or unexpected:
        raise ModelError(f"{label} weights do not match the inferred SD1.x layout "
                         f"(missing {missing[:2]}, unexpected {unexpected[:2]})")


SDXL_UNET, SDXL_TE1, SDXL_TE2 = UNET, "conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."


def sdxl_unet_config(sd: dict[str, Any], pooled_dim: int) -> dict[str, Any]:
    """UNet2DConditionModel arguments of an SGM SDXL UNet (keys without the prefix). Beyond the SD1
    reading: transformer layers per level (counted), the text_time embedding's widths (label_emb's
    input is the pooled width plus 6 time-id embeddings), and SDXL's 64-wide attention heads."""
    cfg = unet_config(sd)
    n_input = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("input_blocks."))
    level, depth = 0, {}
    for i in range(1, n_input):
        if f"input_blocks.{i}.0.op.weight" in sd:
            level += 1
            continue
        blocks = {k.split(".")[4] for k in sd if k.startswith(f"input_blocks.{i}.1.transformer_blocks.")}
        depth.setdefault(level, len(blocks) or 1)
    widths = cfg["block_out_channels"]
    label_in = sd["label_emb.0.0.weight"].shape[1]
    cfg.update(transformer_layers_per_block=[depth.get(n, 1) for n in range(len(widths))],
               attention_head_dim=[max(1, w // 64) for w in widths], addition_embed_type="text_time",
               projection_class_embeddings_input_dim=label_in, addition_time_embed_dim=(label_in - pooled_dim) // 6,
               sample_size=128)
    return cfg


def open_clip_config(sd: dict[str, Any]) -> dict[str, Any]:
    """CLIPTextConfig arguments of an OpenCLIP text tower (keys without the prefix)."""
    emb = sd["token_embedding.weight"]
    hidden = emb.shape[1]
    return {
        "vocab_size": emb.shape[0], "hidden_size": hidden,
        "num_hidden_layers": 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks.")),
        "intermediate_size": sd["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_attention_heads": max(1, hidden // 64), "projection_dim": sd["text_projection"].shape[1],
        "max_position_embeddings": sd["positional_embedding"].shape[0], "hidden_act": "gelu",
    }


def load_sdxl(path: Path) -> dict[str, Any]:
    """The components of an SDXL single-file checkpoint (SGM layout), configs read off the tensors.

    What shapes cannot show is SDXL's convention: 64-wide attention heads in the UNet and both text
    encoders, VAE scale 0.13025."""
    # diffusers, transformers: only when a single-file checkpoint loads
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    ckpt, metadata = read_state_dict(path)
    try:
        te2_sd = {k[len(SDXL_TE2):]: v for k, v in ckpt.items() if k.startswith(SDXL_TE2)}
        t2_cfg = open_clip_config(te2_sd)
        u_cfg = sdxl_unet_config({k[len(UNET):]: v for k, v in ckpt.items() if k.startswith(UNET)},
                                 t2_cfg["projection_dim"])
        v_cfg = dict(vae_config({k[len(VAE):]: v for k, v in ckpt.items() if k.startswith(VAE)}),
                     scaling_factor=0.13025, sample_size=1024)
        te1_sd = convert_ldm_clip_checkpoint(ckpt, remove_prefix=SDXL_TE1)
        te1_sd = {k if k.startswith("text_model.") else "text_model." + k: v for k, v in te1_sd.items()}
        t1_cfg = clip_config(te1_sd)
        synthetic_vocab = t1_cfg["vocab_size"] == len(synthetic_sd.VOCAB)
        ids = dict(bos_token_id=synthetic_sd.BOS_ID, eos_token_id=synthetic_sd.EOS_ID) if synthetic_vocab \
            else dict(bos_token_id=49406, eos_token_id=49407)
        unet = UNet2DConditionModel(**u_cfg)
        vae = AutoencoderKL(**v_cfg)
        te1 = CLIPTextModel(CLIPTextConfig(**ids, **t1_cfg))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**ids, **t2_cfg))
        _load_strict(unet, convert_ldm_unet_checkpoint(ckpt, u_cfg), "UNet")
        _load_strict(vae, convert_ldm_vae_checkpoint(ckpt, v_cfg), "VAE")
        short = not next(iter(te1.state_dict())).startswith("text_model.")  # transformers >= 5 naming
        ignore = ("text_model.embeddings.position_ids", "embeddings.position_ids")
        _load_strict(te1, {k[len("text_model."):] if short else k: v for k, v in te1_sd.items()}, "text encoder",
                     ignore=ignore)
        te2_state = convert_open_clip_checkpoint(te2, ckpt, prefix=SDXL_TE2)
        if not next(iter(k for k in te2.state_dict() if k != "text_projection.weight")).startswith("text_model."):
            te2_state = {k[len("text_model."):] if k.startswith("text_model.") else k: v
                         for k, v in te2_state.items()}
        _load_strict(te2, te2_state, "second text encoder", ignore=ignore)
    except ModelError:
        raise
    except (KeyError, StopIteration, ValueError, RuntimeError, IndexError) as e:
        raise ModelError(f"{path.name}: not an SDXL layout this loader understands ({type(e).__name__}: "
                         f"{str(e)[:120]})") from None
    scheduler = dict(synthetic_sd.SCHEDULER_CONFIG, prediction_type=prediction_type(path, metadata))
    for module in (unet, vae, te1, te2):
        module.eval()
    tokenizer = tokenizer_for(t1_cfg["vocab_size"])
    return {"tokenizer": tokenizer, "text_encoder": te1, "tokenizer_2": tokenizer, "text_encoder_2": te2,
            "vae": vae, "unet": unet, "scheduler_config": scheduler}
