"""SDXL: loradeck against the plain diffusers + peft SDXL recipe (bench/ref_lora_loop_sdxl.py).

Both sides are whole processes on synthetic:sdxl-tiny saved as a diffusers folder, the same data and
knobs (steps, LR, rank, batch, resolution, UNet attention LoRA, no grad clipping), back to back. Then
each exported file is loaded through diffusers' StableDiffusionXLPipeline and the fixed-noise
denoising loss on the training images is compared with the base model's (higher reduction: learnt more).

    python bench/bench_sdxl.py --steps 20 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_train import prepare, run_measured, write_run  # noqa: E402


def denoising_loss(model_dir: Path, images: list[Path], lora_file: Path | None, *, resolution: int,
                   timesteps=(100, 300, 500, 700, 900), seed: int = 1234) -> float:
    import numpy as np
    import torch
    from diffusers import StableDiffusionXLPipeline
    from PIL import Image

    pipe = StableDiffusionXLPipeline.from_pretrained(model_dir)
    if lora_file is not None:
        pipe.load_lora_weights(str(lora_file.parent), weight_name=lora_file.name)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    with torch.no_grad():
        for path in images:
            im = Image.open(path).convert("RGB").resize((resolution, resolution), Image.BICUBIC)
            px = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float()[None] / 127.5 - 1
            latents = pipe.vae.encode(px).latent_dist.mean * pipe.vae.config.scaling_factor
            caption = path.with_suffix(".txt").read_text().strip() if path.with_suffix(".txt").exists() else ""
            hidden, _, pooled, _ = pipe.encode_prompt(caption, do_classifier_free_guidance=False)
            ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]], dtype=torch.float32)
            for t in timesteps:
                noise = torch.randn(latents.shape, generator=gen)
                ts = torch.tensor([t])
                pred = pipe.unet(pipe.scheduler.add_noise(latents, noise, ts), ts, hidden,
                                 added_cond_kwargs={"text_embeds": pooled, "time_ids": ids}).sample
                losses.append(torch.nn.functional.mse_loss(pred, noise).item())
    return float(sum(losses) / len(losses))


def main() -> int:
    import os

    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/loradeck-bench-sdxl"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    from loradeck.trainer.train import synthetic_sd

    model = a.work / "sdxl-tiny"
    if not (model / "model_index.json").exists():
        synthetic_sd.save("sdxl-tiny", model)
    _, project = prepare(a.work, full=False, images=a.images, res=a.res)
    images = sorted(p for p in (project / "dataset").iterdir() if p.suffix != ".txt")
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    base = denoising_loss(model, images, None, resolution=a.res)
    rows = []
    for seed in a.seeds:
        recipe_out = a.work / "recipe" / f"seed{seed}.safetensors"
        recipe_out.parent.mkdir(exist_ok=True)
        recipe = [sys.executable, str(REPO / "bench" / "ref_lora_loop_sdxl.py"), str(model), str(project / "dataset"),
                  str(a.steps), "--batch", str(a.batch), "--res", str(a.res), "--rank", str(a.rank),
                  "--lr", str(a.lr), "--seed", str(seed), "--out", str(recipe_out)]
        run_dir = write_run(a.work / f"run-{seed}", project, model, a, cache=False, seed=seed)
        measured = {}
        for name, cmd in (("recipe", recipe), ("loradeck", [sys.executable, "-m", "loradeck.trainer.train.process",
                                                             str(run_dir)])):
            m = run_measured(cmd, env)
            if m["code"] != 0:
                print(m["output"][-3000:], file=sys.stderr)
                raise SystemExit(f"{name} failed")
            measured[name] = m
        ours = base - denoising_loss(model, images, run_dir / "lora.safetensors", resolution=a.res)
        theirs = base - denoising_loss(model, images, recipe_out, resolution=a.res)
        rows.append({"seed": seed, "loradeck_reduction": round(ours, 5), "recipe_reduction": round(theirs, 5),
                     "wall_ratio": round(measured["loradeck"]["wall"] / measured["recipe"]["wall"], 3),
                     "rss_ratio": round(measured["loradeck"]["peak_rss_mb"] / measured["recipe"]["peak_rss_mb"], 3),
                     "loradeck_wall": measured["loradeck"]["wall"], "recipe_wall": measured["recipe"]["wall"],
                     "loradeck_rss_mb": measured["loradeck"]["peak_rss_mb"],
                     "recipe_rss_mb": measured["recipe"]["peak_rss_mb"]})
        print(json.dumps(rows[-1]), flush=True)
    mean = lambda k: statistics.mean(r[k] for r in rows)  # noqa: E731
    print(json.dumps({"base_loss": round(base, 5), "loradeck_reduction_mean": round(mean("loradeck_reduction"), 5),
                      "recipe_reduction_mean": round(mean("recipe_reduction"), 5),
                      "wall_ratio_mean": round(mean("wall_ratio"), 3), "rss_ratio_mean": round(mean("rss_ratio"), 3)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
