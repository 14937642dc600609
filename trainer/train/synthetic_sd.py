"""Synthetic base models built offline: `synthetic:tiny` and `synthetic:sd15` (SD1.x),
`synthetic:sdxl-tiny` and `synthetic:sdxl` (SDXL: text_time UNet, CLIP + CLIP-with-projection encoders).

Both use the real SD1.x component classes (CLIP text encoder, AutoencoderKL, UNet2DConditionModel,
DDPM scheduler) built from configs with seeded random weights, so no download is ever needed:
`synthetic:tiny` trains on a CPU in seconds (tests, the demo); `synthetic:sd15` has the full SD1.5
architecture (UNet 860 M parameters) for memory and speed measurements. The SDXL pair is the same
idea: `sdxl-tiny` trains on a CPU in seconds and keeps SDXL's block layout (two layers per level,
a plain first level, more transformer layers deeper down) so the kohya SGM key mapping is exercised;
`sdxl` is the SDXL base 1.0 architecture (`component_configs("sdxl")` builds on the meta device too).

The tokenizer is a byte-level CLIP vocabulary (every byte is a token, no merges): real CLIP
tokenization needs the 49k-entry BPE vocabulary, which is data, not architecture.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from loradeck.trainer.errors import ModelError

KINDS = ("tiny", "sd15", "sdxl-tiny", "sdxl")
SDXL_KINDS = ("sdxl-tiny", "sdxl")
PREFIX = "synthetic:"
SEED = 0

SCHEDULER_CONFIG: dict[str, Any] = {
    "_class_name": "DDPMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False,
    "prediction_type": "epsilon",
}


def is_synthetic(name: str) -> bool:
    return name.startswith(PREFIX)


def kind_of(name: str) -> str:
    """`synthetic:tiny` -> `tiny`; ModelError for an unknown kind."""
    kind = name[len(PREFIX):]
    if kind not in KINDS:
        raise ModelError(f"unknown synthetic model {name!r}", 
                         hint="use synthetic:tiny, synthetic:sd15, synthetic:sdxl-tiny or synthetic:sdxl")
    return kind


def _byte_vocab() -> dict[str, int]:
    """GPT-2/CLIP byte-to-unicode alphabet: printable stand-ins for all 256 byte values."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    symbols = [mapping[b] for b in sorted(mapping, key=lambda b: (b not in printable, b))]
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab.update({s + "</w>": len(symbols) + i for i, s in enumerate(symbols)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


VOCAB = _byte_vocab()
BOS_ID, EOS_ID = VOCAB["<|startoftext|>"], VOCAB["<|endoftext|>"]


def write_tokenizer(directory: Path) -> Path:
    """Write the byte-level CLIP tokenizer files (vocab.json, merges.txt) into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(VOCAB))
    (directory / "merges.txt").write_text("#version: 0.2\n")
    (directory / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    return directory


def _sdxl_configs(kind: str) -> dict[str, dict[str, Any]]:
    """SDXL: UNet conditioned on [te1 hidden ; te2 hidden] plus text_time (te2 pooled + 6 time ids)."""
    if kind == "sdxl":
        te1 = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                   num_attention_heads=12, max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
        te2 = dict(vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                   num_attention_heads=20, max_position_embeddings=77, projection_dim=1280, hidden_act="gelu")
        unet = dict(sample_size=128, block_out_channels=[320, 640, 1280], layers_per_block=2,
                    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                    up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                    transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20],
                    cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
                    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816)
        vae = dict(in_channels=3, out_channels=3, latent_channels=4, down_block_types=["DownEncoderBlock2D"] * 4,
                   up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                   layers_per_block=2, sample_size=1024, scaling_factor=0.13025)
    else:
        te1 = dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                   num_attention_heads=4, max_position_embeddings=77, projection_dim=32)
        te2 = dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                   num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="gelu")
        unet = dict(sample_size=16, block_out_channels=[32, 64], layers_per_block=2,
                    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
                    up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"], transformer_layers_per_block=[1, 2],
                    attention_head_dim=[2, 4], cross_attention_dim=64, use_linear_projection=True,
                    addition_embed_type="text_time", addition_time_embed_dim=8,
                    projection_class_embeddings_input_dim=6 * 8 + 32, norm_num_groups=8)
        vae = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[16, 32],
                   down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                   norm_num_groups=8, sample_size=64, scaling_factor=0.13025)
    for te in (te1, te2):
        te.update(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    return {"text_encoder": te1, "text_encoder_2": te2, "unet": unet, "vae": vae,
            "scheduler": dict(SCHEDULER_CONFIG)}


def component_configs(kind: str) -> dict[str, dict[str, Any]]:
    """Constructor arguments of each component for `kind` (one of KINDS)."""
    if kind in SDXL_KINDS:
        return _sdxl_configs(kind)
    if kind == "sd15":
        text_encoder = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                            num_attention_heads=12, max_position_embeddings=77, projection_dim=768,
                            hidden_act="quick_gelu")
        unet = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = dict(in_channels=3, out_channels=3, latent_channels=4, down_block_types=["DownEncoderBlock2D"] * 4,
                   up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[128, 256, 512, 512],
                   layers_per_block=2, sample_size=512)
    else:
        text_encoder = dict(vocab_size=len(VOCAB), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                            num_attention_heads=4, max_position_embeddings=77, projection_dim=32)
        unet = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=[32, 64],
                    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"],
                    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"], cross_attention_dim=32,
                    attention_head_dim=8, norm_num_groups=8)
        vae = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[16, 32],
                   down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                   norm_num_groups=8, sample_size=64)
    text_encoder.update(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    return {"text_encoder": text_encoder, "unet": unet, "vae": vae, "scheduler": dict(SCHEDULER_CONFIG)}


def build(kind: str, *, seed: int = SEED):
    """The components of synthetic model `kind`, freshly initialised from `seed` (global RNG untouched).

    Returns a dict with tokenizer, text_encoder, vae, unet and scheduler_config.
    """
    import torch  # diffusers, torch, transformers: only when the synthetic model is built; the CLI imports this module
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    configs = component_configs(kind)
    with tempfile.TemporaryDirectory(prefix="loradeck-tok-") as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(Path(tmp)), model_max_length=77)
    parts: dict[str, Any] = {"tokenizer": tokenizer, "scheduler_config": configs["scheduler"]}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        parts["text_encoder"] = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
        if "text_encoder_2" in configs:
            # transformers: only when the synthetic model is built; the CLI imports this module
            from transformers import CLIPTextModelWithProjection

            parts["text_encoder_2"] = CLIPTextModelWithProjection(CLIPTextConfig(**configs["text_encoder_2"]))
            parts["tokenizer_2"] = tokenizer
        parts["vae"] = AutoencoderKL(**configs["vae"])
        parts["unet"] = UNet2DConditionModel(**configs["unet"])
    for key in ("text_encoder", "text_encoder_2", "vae", "unet"):
        if key in parts:
            parts[key].eval()
    return parts


def save(kind: str, out: Path, *, seed: int = SEED) -> Path:
    """Write synthetic model `kind` as a diffusers folder at `out` (safetensors weights)."""
    out = Path(out)
    parts = build(kind, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    parts["tokenizer"].save_pretrained(out / "tokenizer")
    parts["text_encoder"].save_pretrained(out / "text_encoder", safe_serialization=True)
    parts["vae"].save_pretrained(out / "vae", safe_serialization=True)
    parts["unet"].save_pretrained(out / "unet", safe_serialization=True)
    if "text_encoder_2" in parts:
        parts["tokenizer_2"].save_pretrained(out / "tokenizer_2")
        parts["text_encoder_2"].save_pretrained(out / "text_encoder_2", safe_serialization=True)
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(parts["scheduler_config"], indent=2))
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.32.0",
             "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "safety_checker": [None, None],
             "feature_extractor": [None, None], "requires_safety_checker": False}
    if "text_encoder_2" in parts:
        index.update(_class_name="StableDiffusionXLPipeline", text_encoder_2=["transformers",
                     "CLIPTextModelWithProjection"], tokenizer_2=["transformers", "CLIPTokenizer"],
                     force_zeros_for_empty_prompt=True)
        for key in ("safety_checker", "feature_extractor", "requires_safety_checker"):
            index.pop(key)
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out
