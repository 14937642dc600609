"""Denoising loss of a base model with a LoRA file loaded through diffusers (fixed noise and timesteps).

Shared by the learning test and bench/bench_train.py: it measures what a user of the exported file gets.
"""

from __future__ import annotations

from pathlib import Path


def denoising_loss(model_dir: Path, images: list[Path], lora_file: Path | None, *, resolution: int = 64,
                   timesteps=(100, 300, 500, 700, 900), seed: int = 1234, captions: list[str] | None = None) -> float:
    """Mean epsilon-MSE of the UNet on `images` (VAE mean latents, fixed noise per image and timestep)."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    if lora_file is not None:
        pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    with torch.no_grad():
        for k, path in enumerate(images):
            im = Image.open(path).convert("RGB").resize((resolution, resolution), Image.BICUBIC)
            px = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float()[None] / 127.5 - 1
            latents = pipe.vae.encode(px).latent_dist.mean * pipe.vae.config.scaling_factor
            caption = captions[k] if captions else (path.with_suffix(".txt").read_text().strip()
                                                    if path.with_suffix(".txt").exists() else "")
            ids = pipe.tokenizer([caption], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            hidden = pipe.text_encoder(ids)[0]
            for t in timesteps:
                noise = torch.randn(latents.shape, generator=gen)
                ts = torch.tensor([t])
                noisy = pipe.scheduler.add_noise(latents, noise, ts)
                pred = pipe.unet(noisy, ts, hidden).sample
                losses.append(torch.nn.functional.mse_loss(pred, noise).item())
    return float(sum(losses) / len(losses))
