"""kohya's SDXL LoRA layout: UNet modules under their SGM/LDM block names, two text encoders.

    lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q   (diffusers: down_blocks.1.attentions.0...)
    lora_unet_middle_block_1_...                                 (mid_block.attentions.0...)
    lora_unet_output_blocks_0_1_...                              (up_blocks.0.attentions.0...)
    lora_te1_text_model_...                                      CLIP ViT-L (text_encoder)
    lora_te2_text_model_...                                      OpenCLIP bigG (text_encoder_2)

A1111 and Forge find SDXL UNet modules only by these block names. The numbering follows from the
UNet's block structure, not from a table: the SGM UNet lists its input blocks as conv_in, then per
level `layers_per_block` (resnet, transformer) blocks and one downsampler block (none after the
last level); its output blocks are per level `layers_per_block + 1` (resnet, transformer[, upsampler])
blocks; the middle block is (resnet, transformer, resnet). The transformer sits at index 1 of its
block. Inside a transformer the module names are the same in both layouts.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from loradeck.trainer.lora.file_format import (
    CLIP_TEXT_ROOT,
    TE_PREFIX,
    UNET_PREFIX,
    LoraFileError,
    _convert_part,
    kohya_key,
    module_path_from_kohya,
)

TE1_PREFIX, TE2_PREFIX = "lora_te1", "lora_te2"
SDXL_PREFIXES = (UNET_PREFIX, TE1_PREFIX, TE2_PREFIX)

_DOWN = re.compile(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.")
_UP = re.compile(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.")
_MID = "mid_block.attentions.0."
_INPUT = re.compile(r"^input_blocks\.(\d+)\.1\.")
_OUTPUT = re.compile(r"^output_blocks\.(\d+)\.1\.")
_MIDDLE = "middle_block.1."


def _layers(unet_config: Mapping[str, Any]) -> int:
    layers = unet_config.get("layers_per_block", 2)
    if isinstance(layers, (list, tuple)):
        if len(set(layers)) != 1:
            raise LoraFileError("a UNet with different layers per level has no SGM block numbering")
        layers = layers[0]
    return int(layers)


def diffusers_to_sgm(path: str, unet_config: Mapping[str, Any]) -> str:
    """`down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q` -> `input_blocks.4.1.transformer_blocks...`."""
    n = _layers(unet_config)
    if m := _DOWN.match(path):
        level, j = int(m[1]), int(m[2])
        return f"input_blocks.{1 + level * (n + 1) + j}.1." + path[m.end():]
    if m := _UP.match(path):
        level, j = int(m[1]), int(m[2])
        return f"output_blocks.{level * (n + 1) + j}.1." + path[m.end():]
    if path.startswith(_MID):
        return _MIDDLE + path[len(_MID):]
    raise LoraFileError(f"{path}: only transformer (attention) modules have an SGM name in this exporter")


def sgm_to_diffusers(path: str, unet_config: Mapping[str, Any]) -> str:
    """The inverse of `diffusers_to_sgm`."""
    n = _layers(unet_config)
    if m := _INPUT.match(path):
        index = int(m[1]) - 1
        level, j = divmod(index, n + 1)
        if index < 0 or j >= n:
            raise LoraFileError(f"{path}: input block {m[1]} holds no transformer")
        return f"down_blocks.{level}.attentions.{j}." + path[m.end():]
    if m := _OUTPUT.match(path):
        level, j = divmod(int(m[1]), n + 1)
        return f"up_blocks.{level}.attentions.{j}." + path[m.end():]
    if path.startswith(_MIDDLE):
        return _MID + path[len(_MIDDLE):]
    raise LoraFileError(f"{path}: not an SGM transformer module path")


def _strip(key: str) -> str:
    for prefix in ("base_model.model.", "unet."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def peft_to_kohya_sdxl(unet_lora: dict, te1_lora: dict | None, te2_lora: dict | None, *, alpha: float,
                       unet_config: Mapping[str, Any]) -> dict[str, Any]:
    """peft state dicts of an SDXL adapter -> kohya SDXL tensors (down, up, 0-dim alpha per module)."""
    if not unet_lora and not te1_lora and not te2_lora:
        raise LoraFileError("the adapter has no LoRA weights")
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise LoraFileError(f"alpha must be a positive number, got {alpha!r}")
    renamed = {diffusers_to_sgm(_strip(k), unet_config): v for k, v in (unet_lora or {}).items()}
    tensors = _convert_part(renamed, UNET_PREFIX, alpha)
    for prefix, state in ((TE1_PREFIX, te1_lora), (TE2_PREFIX, te2_lora)):
        for key, value in _convert_part(state or {}, TE_PREFIX, alpha).items():
            tensors[prefix + key[len(TE_PREFIX):]] = value
    return tensors


def is_sdxl_keys(keys) -> bool:
    """A kohya file in the SDXL layout: te1/te2 keys, or UNet keys under SGM block names."""
    return any(k.startswith((TE1_PREFIX + "_", TE2_PREFIX + "_", "lora_unet_input_blocks_", "lora_unet_middle_block_",
                             "lora_unet_output_blocks_")) for k in keys)


# Every SDXL-architecture model (base 1.0 and its fine-tunes, synthetic:sdxl-tiny too) has two
# layers per level: what converting a file needs when no model is at hand.
SDXL_UNET_LAYOUT = {"layers_per_block": 2}
_SGM_KEY = re.compile(r"^lora_unet_(input_blocks_\d+_1|middle_block_1|output_blocks_\d+_1)_(.+)$")


def kohya_sdxl_module(name: str) -> tuple[str, str]:
    """A kohya SDXL module key -> (diffusers part, dotted module path):
    `lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q` -> ("unet", "down_blocks.1.attentions.0...")."""
    for prefix, part in ((TE1_PREFIX, "text_encoder"), (TE2_PREFIX, "text_encoder_2")):
        if name.startswith(prefix + "_"):
            return part, module_path_from_kohya(TE_PREFIX + name[len(prefix):])[1]
    m = _SGM_KEY.match(name)
    if not m:
        raise LoraFileError(f"{name}: not a kohya SDXL module key (SGM UNet block or lora_te1_/lora_te2_)")
    inner = module_path_from_kohya(f"{UNET_PREFIX}_{m[2]}")[1]
    block = re.sub(r"_(\d+)", r".\1", m[1])  # input_blocks_4_1 -> input_blocks.4.1
    return "unet", sgm_to_diffusers(f"{block}.{inner}", SDXL_UNET_LAYOUT)


def kohya_sdxl_name(part: str, module: str) -> str:
    """The inverse of `kohya_sdxl_module`."""
    if part == "unet":
        return kohya_key(UNET_PREFIX, diffusers_to_sgm(module, SDXL_UNET_LAYOUT))
    module = module if module.startswith(CLIP_TEXT_ROOT) else CLIP_TEXT_ROOT + module
    prefix = TE1_PREFIX if part == "text_encoder" else TE2_PREFIX
    return prefix + kohya_key(TE_PREFIX, module)[len(TE_PREFIX):]
