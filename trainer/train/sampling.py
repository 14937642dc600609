"""Sample images during training, from the config's prompts, with the adapter as it is now.

A small DDIM loop over the training UNet rather than a diffusers pipeline: it takes precomputed
prompt embeddings (so the text encoder can be freed when its outputs are cached), runs one prompt
at a time with classifier-free guidance (batch 2: never more than a training step's batch of 1 at
the same resolution), and decodes on whatever device the VAE lives on (the CPU when latents are
cached), so sampling does not raise peak VRAM above the training step's.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from loradeck.trainer.atomic import atomic_write_bytes
from loradeck.trainer.train.sdxl_conditioning import sample_time_ids, unet_kwargs


def sample_images(*, unet, vae, scheduler_config: dict, prompt_embeds: Sequence, negative_embeds,
                  resolution: int, steps: int, guidance: float, seed: int, device, dtype,
                  autocast_ctx=None) -> list[Any]:
    """One PIL image per prompt embedding (each (77, D), or SDXL's (hidden, pooled) pair); deterministic
    for a given seed. SDXL samples are conditioned as uncropped images at the training resolution."""
    import numpy as np  # diffusers, numpy, torch: only when training runs, not when this module is imported
    import torch
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(scheduler_config)
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    shape = (1, unet.config.in_channels, resolution // vae_scale, resolution // vae_scale)
    was_training = unet.training
    unet.eval()
    images = []
    try:
        for k, cond in enumerate(prompt_embeds):
            generator = torch.Generator().manual_seed(seed + k)
            latents = torch.randn(shape, generator=generator).to(device) * scheduler.init_noise_sigma
            extra = {}
            if isinstance(cond, tuple):  # SDXL
                pooled = torch.stack([negative_embeds[1], cond[1]]).to(device=device)
                extra = unet_kwargs(pooled, sample_time_ids(resolution, 2), dtype)
                cond, negative = cond[0], negative_embeds[0]
            else:
                negative = negative_embeds
            context = torch.stack([negative, cond]).to(device=device, dtype=dtype)
            scheduler.set_timesteps(steps, device=device)
            with torch.no_grad(), (autocast_ctx() if autocast_ctx else contextlib.nullcontext()):
                for t in scheduler.timesteps:
                    model_in = scheduler.scale_model_input(torch.cat([latents] * 2), t)
                    uncond, text = unet(model_in.to(dtype), t, context, **extra).sample.float().chunk(2)
                    latents = scheduler.step(uncond + guidance * (text - uncond), t, latents).prev_sample
            vae_device = next(vae.parameters()).device
            vae_dtype = next(vae.parameters()).dtype
            with torch.no_grad():
                decoded = vae.decode(latents.to(vae_device, vae_dtype) / vae.config.scaling_factor).sample
            array = ((decoded[0].float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
            images.append(Image.fromarray(np.ascontiguousarray(array)))
            del latents, context, decoded
    finally:
        unet.train(was_training)
    return images


def save_image(image, path: Path) -> Path:
    """Write a PNG atomically (a monitor may be displaying the folder)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    path.parent.mkdir(exist_ok=True)  # samples/ in the run folder, never the run folder itself
    atomic_write_bytes(path, buf.getvalue())
    return path
