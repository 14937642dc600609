"""Reference: the plain diffusers + peft SDXL LoRA recipe (the shape of diffusers' SDXL LoRA example),
reduced to its training loop: the yardstick for loradeck's SDXL trainer (bench/bench_sdxl.py).

usage: ref_lora_loop_sdxl.py MODEL_DIR DATA_DIR STEPS [--batch N] [--res PX] [--rank R] [--lr X] [--seed S]
       [--out FILE]
DATA_DIR holds square images (already at --res) with same-stem .txt captions.
Prints one JSON line: {"steps":..,"sec_per_step":..,"peak_rss_mb":..,"final_loss":..}
"""
import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.utils import convert_state_dict_to_diffusers
from peft import LoraConfig, get_peft_model_state_dict
from PIL import Image
from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

ap = argparse.ArgumentParser()
ap.add_argument("model"); ap.add_argument("data"); ap.add_argument("steps", type=int)
ap.add_argument("--batch", type=int, default=1); ap.add_argument("--res", type=int, default=64)
ap.add_argument("--rank", type=int, default=4); ap.add_argument("--lr", type=float, default=1e-4)
ap.add_argument("--out", default=None); ap.add_argument("--seed", type=int, default=0)
a = ap.parse_args()
torch.manual_seed(a.seed)
m = Path(a.model)
tokenizers = [CLIPTokenizer.from_pretrained(m / "tokenizer"), CLIPTokenizer.from_pretrained(m / "tokenizer_2")]
encoders = [CLIPTextModel.from_pretrained(m / "text_encoder"),
            CLIPTextModelWithProjection.from_pretrained(m / "text_encoder_2")]
vae = AutoencoderKL.from_pretrained(m / "vae")
unet = UNet2DConditionModel.from_pretrained(m / "unet")
sched = DDPMScheduler.from_pretrained(m / "scheduler")
for mod in (*encoders, vae, unet):
    mod.requires_grad_(False)
unet.add_adapter(LoraConfig(r=a.rank, lora_alpha=a.rank, init_lora_weights="gaussian",
                            target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
params = [p for p in unet.parameters() if p.requires_grad]
opt = torch.optim.AdamW(params, lr=a.lr)
files = sorted(p for p in Path(a.data).iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp"})


def load(p):
    im = Image.open(p).convert("RGB").resize((a.res, a.res), Image.BICUBIC)
    t = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 127.5 - 1
    cap = p.with_suffix(".txt").read_text().strip() if p.with_suffix(".txt").exists() else ""
    return t, cap


def encode_prompt(captions):
    """SDXL's example: penultimate hidden states of both encoders, concatenated; pooled from the second."""
    embeds, pooled = [], None
    for tok, te in zip(tokenizers, encoders):
        ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids
        out = te(ids, output_hidden_states=True)
        pooled = out[0]
        embeds.append(out.hidden_states[-2])
    return torch.cat(embeds, dim=-1), pooled


losses, t0 = [], None
for step in range(a.steps + 1):  # step 0 is warm-up, not timed
    if step == 1:
        t0 = time.perf_counter()
    batch = [load(files[(step * a.batch + i) % len(files)]) for i in range(a.batch)]
    px = torch.stack([b[0] for b in batch])
    with torch.no_grad():
        latents = vae.encode(px).latent_dist.sample() * vae.config.scaling_factor
        hidden, pooled = encode_prompt([b[1] for b in batch])
    time_ids = torch.tensor([[a.res, a.res, 0, 0, a.res, a.res]] * len(batch), dtype=torch.float32)
    noise = torch.randn_like(latents)
    ts = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],)).long()
    noisy = sched.add_noise(latents, noise, ts)
    pred = unet(noisy, ts, hidden, added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
    loss = F.mse_loss(pred.float(), noise.float())
    loss.backward(); opt.step(); opt.zero_grad()
    losses.append(loss.item())
elapsed = time.perf_counter() - t0
if a.out:
    sd = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionXLPipeline.save_lora_weights(Path(a.out).parent, unet_lora_layers=sd, weight_name=Path(a.out).name)
print(json.dumps({"steps": a.steps, "sec_per_step": elapsed / a.steps,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "final_loss": losses[-1]}))
