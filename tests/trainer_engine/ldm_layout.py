"""Test support: write a diffusers SD1.x model as one original-layout (LDM / A1111) checkpoint.

The inverse of the LDM->diffusers key conversion, for building single-file test checkpoints offline.
"""

from __future__ import annotations

from typing import Any


def _unet_map(keys, levels: int, per_level: int, down_attn: list[bool], up_attn: list[bool]) -> dict[str, str]:
    layer = []  # (ldm prefix, diffusers prefix)
    for i in range(levels):
        for j in range(per_level):
            layer.append((f"input_blocks.{(per_level + 1) * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if down_attn[i]:
                layer.append((f"input_blocks.{(per_level + 1) * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(per_level + 1):
            layer.append((f"output_blocks.{(per_level + 1) * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if up_attn[i]:
                layer.append((f"output_blocks.{(per_level + 1) * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            layer.append((f"input_blocks.{(per_level + 1) * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            layer.append((f"output_blocks.{(per_level + 1) * i + per_level}.{2 if up_attn[i] else 1}.",
                          f"up_blocks.{i}.upsamplers.0."))
    layer += [("middle_block.1.", "mid_block.attentions.0."), ("middle_block.0.", "mid_block.resnets.0."),
              ("middle_block.2.", "mid_block.resnets.1.")]
    whole = {"time_embedding.linear_1.weight": "time_embed.0.weight", "time_embedding.linear_1.bias": "time_embed.0.bias",
             "time_embedding.linear_2.weight": "time_embed.2.weight", "time_embedding.linear_2.bias": "time_embed.2.bias",
             "conv_in.weight": "input_blocks.0.0.weight", "conv_in.bias": "input_blocks.0.0.bias",
             "conv_norm_out.weight": "out.0.weight", "conv_norm_out.bias": "out.0.bias",
             "conv_out.weight": "out.2.weight", "conv_out.bias": "out.2.bias"}
    resnet = [("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("out_layers.0", "norm2"),
              ("out_layers.3", "conv2"), ("emb_layers.1", "time_emb_proj"), ("skip_connection", "conv_shortcut")]
    mapping = {}
    for key in keys:
        if key in whole:
            mapping[key] = whole[key]
            continue
        new = key
        if "resnets" in key:
            for ldm, hf in resnet:
                new = new.replace(hf, ldm)
        for ldm, hf in layer:
            if new.startswith(hf):
                new = ldm + new[len(hf):]
                break
        mapping[key] = new
    return mapping


def _vae_map(keys, levels: int, per_level: int) -> dict[str, str]:
    layer = [("nin_shortcut", "conv_shortcut"), ("norm_out", "conv_norm_out"), ("mid.attn_1.", "mid_block.attentions.0.")]
    for i in range(levels):
        for j in range(per_level):
            layer.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        if i < levels - 1:
            layer.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            layer.append((f"up.{levels - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
        for j in range(per_level + 1):
            layer.append((f"decoder.up.{levels - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
    for i in range(2):
        layer.append((f"mid.block_{i + 1}.", f"mid_block.resnets.{i}."))
    attn = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0.")]
    mapping = {}
    for key in keys:
        new = key
        for ldm, hf in layer:
            new = new.replace(hf, ldm)
        if "attn_1" in new:
            for ldm, hf in attn:
                new = new.replace(hf, ldm)
        mapping[key] = new
    return mapping


def to_single_file(unet, vae, text_encoder) -> dict[str, Any]:
    """One LDM-layout state dict (model.diffusion_model / first_stage_model / cond_stage_model)."""
    uc, vc = unet.config, vae.config
    down_attn = [t.startswith("CrossAttn") for t in uc.down_block_types]
    up_attn = [t.startswith("CrossAttn") for t in uc.up_block_types]
    out = {}
    u = unet.state_dict()
    for hf, ldm in _unet_map(u, len(uc.block_out_channels), uc.layers_per_block, down_attn, up_attn).items():
        out["model.diffusion_model." + ldm] = u[hf].contiguous()
    v = vae.state_dict()
    for hf, ldm in _vae_map(v, len(vc.block_out_channels), vc.layers_per_block).items():
        t = v[hf]
        if "mid.attn_1." in ldm and ldm.endswith("weight") and t.dim() == 2:
            t = t[:, :, None, None]  # LDM's VAE attention uses 1x1 convs
        out["first_stage_model." + ldm] = t.contiguous()
    for k, t in text_encoder.state_dict().items():  # SD1 files name them text_model.* (transformers 4)
        out["cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k)] = \
            t.contiguous()
    return out


def to_sdxl_single_file(unet, vae, text_encoder, text_encoder_2) -> dict[str, Any]:
    """An SGM-layout SDXL checkpoint: UNet with label_emb, conditioner.embedders.0 (CLIP, transformers
    names) and conditioner.embedders.1 (OpenCLIP names: fused in_proj, resblocks, text_projection)."""
    import torch

    out = {k: v for k, v in to_single_file(unet, vae, text_encoder).items() if not k.startswith("cond_stage_model.")}
    for k in [k for k in out if ".add_embedding." in k or k.startswith("model.diffusion_model.add_embedding.")]:
        layer = "0" if ".linear_1." in k else "2"
        out[f"model.diffusion_model.label_emb.0.{layer}.{k.rsplit('.', 1)[1]}"] = out.pop(k)
    for k, t in text_encoder.state_dict().items():
        out["conditioner.embedders.0.transformer." + (k if k.startswith("text_model.") else "text_model." + k)] = \
            t.contiguous()
    sd = {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
          for k, v in text_encoder_2.state_dict().items()}
    pre = "conditioner.embedders.1.model."
    out[pre + "token_embedding.weight"] = sd["text_model.embeddings.token_embedding.weight"]
    out[pre + "positional_embedding"] = sd["text_model.embeddings.position_embedding.weight"]
    out[pre + "ln_final.weight"] = sd["text_model.final_layer_norm.weight"]
    out[pre + "ln_final.bias"] = sd["text_model.final_layer_norm.bias"]
    out[pre + "text_projection"] = sd["text_projection.weight"].T.contiguous()
    n = text_encoder_2.config.num_hidden_layers
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i in range(n):
        src, dst = f"text_model.encoder.layers.{i}.", f"{pre}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat([sd[src + f"self_attn.{p}_proj.{kind}"] for p in "qkv"])
            for hf, ldm in names.items():
                out[dst + f"{ldm}.{kind}"] = sd[src + f"{hf}.{kind}"]
    return out
