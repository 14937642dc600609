"""Tiny, randomly initialised SD-1.x-shaped models built offline for the publishing tests.

Same component classes as SD1.5 (CLIP text encoder, VAE, UNet2DCondition), just tiny. The UNet's
proj_in/proj_out are 1x1 convs, as in SD1.5, so conv LoRA layers are exercised too.
"""

from __future__ import annotations

import json
from pathlib import Path

ATTENTION_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
KOHYA_TARGETS = ATTENTION_TARGETS + ["ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_tokenizer(d: Path) -> int:
    """A byte-level CLIP tokenizer with no merges; returns the vocab size."""
    chars = list(_bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    d.mkdir(parents=True, exist_ok=True)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return len(vocab)


def tiny_unet(seed: int = 0):
    import torch
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8)


def tiny_text_encoder(vocab_size: int, seed: int = 0):
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
                         bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    return CLIPTextModel(cfg)


def tiny_pipeline(workdir: Path, seed: int = 0):
    """A StableDiffusionPipeline of tiny random models (same seed -> same weights)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline
    from transformers import CLIPTokenizer

    tok_dir = workdir / "tokenizer"
    vocab_size = write_tokenizer(tok_dir)
    tok = CLIPTokenizer.from_pretrained(tok_dir, model_max_length=77)
    unet = tiny_unet(seed)
    te = tiny_text_encoder(vocab_size, seed)
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=32)
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          num_train_timesteps=1000, steps_offset=1, clip_sample=False)
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def save_tiny_base(out: Path, seed: int = 0) -> Path:
    """Save a tiny pipeline as a diffusers folder (a 'base model' that validation can load)."""
    pipe = tiny_pipeline(out.parent / (out.name + "-work"), seed)
    pipe.save_pretrained(out)
    return out


def add_random_lora(model, targets: list[str], *, rank: int, alpha: float, seed: int = 1):
    """Add a LoRA adapter with random (non-zero) A and B, as after some training."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    if hasattr(model, "set_adapters"):  # diffusers model
        model.add_adapter(config)
    else:  # transformers' add_adapter wants a newer peft than the one pinned; inject directly
        inject_adapter_in_model(config, model)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.mul_(0.5)
    return model


def unet_output(unet, seed: int = 3):
    import torch

    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(1, 4, 8, 8, generator=g)
    enc = torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        return unet(sample, torch.tensor([10]), enc).sample


def te_output(te):
    import torch

    ids = torch.tensor([[te.config.bos_token_id, 10, 20, 30, te.config.eos_token_id]])
    with torch.no_grad():
        return te(ids)[0]


def make_lora_tensors(*, targets=ATTENTION_TARGETS, rank: int = 4, alpha: float = 2.0, text_encoder: bool = False,
                      seed: int = 1):
    """kohya tensors from a peft-adapted tiny UNet (and text encoder); returns (tensors, unet, te)."""
    from peft import get_peft_model_state_dict

    from loradeck.trainer.lora.file_format import peft_to_kohya

    unet = add_random_lora(tiny_unet(), targets, rank=rank, alpha=alpha, seed=seed)
    te = None
    te_sd = None
    if text_encoder:
        vocab = len(_bytes_to_unicode()) * 2 + 2
        te = add_random_lora(tiny_text_encoder(vocab), TE_TARGETS, rank=rank, alpha=alpha, seed=seed + 1)
        te_sd = get_peft_model_state_dict(te)
    return peft_to_kohya(get_peft_model_state_dict(unet), te_sd, alpha=alpha), unet, te


def write_lora(path: Path, *, precision: str = "fp16", output_name: str = "mylora", trigger: str = "sks",
               **kwargs) -> str:
    """A real kohya LoRA file at `path` with loradeck metadata; returns its sshs_model_hash."""
    from loradeck.trainer.config.train_config import TrainConfig
    from loradeck.trainer.lora.file_format import kohya_metadata, save_kohya_lora

    tensors, _, _ = make_lora_tensors(**kwargs)
    cfg = TrainConfig(rank=kwargs.get("rank", 4), alpha=kwargs.get("alpha", 2.0), output_name=output_name,
                      max_train_steps=100, base_model="tiny-base").to_dict()
    meta = kohya_metadata(config=cfg, base_model="tiny-base", base_model_version="sd_v1", resolution=64,
                          tag_frequency={"1_dataset": {trigger: 5, "red hat": 3, "smiling": 2}},
                          num_train_images=5, steps=100, epochs=20, output_name=output_name,
                          extra={"trigger": trigger})
    return save_kohya_lora(path, tensors, meta, precision=precision)
