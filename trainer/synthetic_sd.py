"""Synthetic SD1.x base models built offline: `synthetic:tiny` and `synthetic:sd15`.

Both use the real SD1.x component classes (CLIP text encoder, AutoencoderKL, UNet2DConditionModel,
DDPM scheduler) built from configs with seeded random weights, so no download is ever needed:
`synthetic:tiny` trains on a CPU in seconds (tests, the demo); `synthetic:sd15` has the full SD1.5
architecture (UNet 860 M parameters) for memory and speed measurements.

The tokenizer is a byte-level CLIP vocabulary (every byte is a token, no merges): real CLIP
tokenization needs the 49k-entry BPE vocabulary, which is data, not architecture.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

KINDS = ("tiny", "sd15")
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
    from trainer.errors import ModelError

    kind = name[len(PREFIX):]
    if kind not in KINDS:
        raise ModelError(f"unknown synthetic model {name!r}", hint="use synthetic:tiny or synthetic:sd15")
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


def component_configs(kind: str) -> dict[str, dict[str, Any]]:
    """Constructor arguments of each component for `kind` ("tiny" or "sd15")."""
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
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    configs = component_configs(kind)
    with tempfile.TemporaryDirectory(prefix="loradeck-tok-") as tmp:
        tokenizer = CLIPTokenizer.from_pretrained(write_tokenizer(Path(tmp)), model_max_length=77)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
        vae = AutoencoderKL(**configs["vae"])
        unet = UNet2DConditionModel(**configs["unet"])
    for module in (text_encoder, vae, unet):
        module.eval()
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae, "unet": unet,
            "scheduler_config": configs["scheduler"]}


def save(kind: str, out: Path, *, seed: int = SEED) -> Path:
    """Write synthetic model `kind` as a diffusers folder at `out` (safetensors weights)."""
    out = Path(out)
    parts = build(kind, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    parts["tokenizer"].save_pretrained(out / "tokenizer")
    parts["text_encoder"].save_pretrained(out / "text_encoder", safe_serialization=True)
    parts["vae"].save_pretrained(out / "vae", safe_serialization=True)
    parts["unet"].save_pretrained(out / "unet", safe_serialization=True)
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(parts["scheduler_config"], indent=2))
    index = {"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.32.0",
             "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
             "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
             "vae": ["diffusers", "AutoencoderKL"], "safety_checker": [None, None],
             "feature_extractor": [None, None], "requires_safety_checker": False}
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out
