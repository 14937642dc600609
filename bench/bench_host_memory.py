"""Host memory (peak RSS) of a training run against the plain fp32 diffusers + peft recipe.

The full SD1.5 architecture (synthetic:sd15, saved once as a diffusers folder) on the CPU, 256 px, batch 1,
a few steps; every variant is a whole process and its peak RSS comes from wait4(), so imports, model loading
and caching count. Variants, run back to back:
    recipe            ../shared/bench/ref_lora_loop.py (fp32, the plain recipe)
    loradeck fp32     the trainer, mixed precision off
    loradeck bf16+cache   --mixed-precision bf16 --cache-latents --cache-text-embeddings: frozen weights are read
                      straight into bf16 (trainer/train/dtype_loading.py), the text encoder and the VAE's
                      encoder are released once their outputs are cached
Goal (issue 14): the bf16+cache run peaks at <= 0.6x the recipe's RSS.

    python bench/bench_host_memory.py                 # 256 px, 4 steps, 4 images
    python bench/bench_host_memory.py --steps 2 --images 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from bench_train import SHARED, prepare, run_measured, write_run  # noqa: E402  (bench's own helpers)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--res", type=int, default=256)
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "cache" / "train")
    ap.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.prepare_only:
        prepare(a.work, full=True, images=a.images, res=a.res)
        return 0
    a.batch, a.rank, a.lr = 1, 4, 1e-4

    # The model is built (and the data written) in a child: Linux carries a process's peak RSS across
    # fork and exec into ru_maxrss, so building SD1.5 in fp32 here would put a 4.4 GiB floor under every
    # variant's wait4() figure (the first run of this bench measured exactly that floor).
    subprocess.run([sys.executable, __file__, "--prepare-only", "--work", str(a.work), "--images", str(a.images),
                    "--res", str(a.res)], check=True)
    model, project = prepare(a.work, full=True, images=a.images, res=a.res)  # already there: only paths
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")

    def loradeck(name: str, **knobs) -> list[str]:
        run = write_run(a.work / f"host-{name}", project, model, a, cache=bool(knobs.pop("cache", False)))
        if knobs:  # write_run's config with these knobs changed
            import tomlkit

            doc = tomlkit.parse((run / "config.toml").read_text())
            doc.update(knobs)
            (run / "config.toml").write_text(tomlkit.dumps(doc))
        return [sys.executable, "-m", "loradeck.trainer.train.process", str(run)]

    variants = {
        "recipe": [sys.executable, str(SHARED / "ref_lora_loop.py"), str(model), str(project / "dataset"),
                   str(a.steps), "--batch", "1", "--res", str(a.res), "--rank", str(a.rank), "--lr", str(a.lr),
                   "--seed", "0"],
        "loradeck fp32": loradeck("fp32"),
        "loradeck bf16+cache": loradeck("bf16-cache", cache=True, mixed_precision="bf16"),
    }
    results = {}
    for name, cmd in variants.items():
        m = run_measured(cmd, env)
        if m["code"] != 0:
            print(m["output"][-3000:], file=sys.stderr)
            raise SystemExit(f"{name} failed with exit code {m['code']}")
        results[name] = {"peak_rss_mb": m["peak_rss_mb"], "wall": m["wall"], "cpu": m["cpu"]}
        print(json.dumps({"variant": name, **results[name]}), flush=True)
    base = results["recipe"]["peak_rss_mb"]
    for name, r in results.items():
        r["rss_ratio"] = round(r["peak_rss_mb"] / base, 3)
    print(json.dumps({"model": "synthetic:sd15", "res": a.res, "steps": a.steps, "images": a.images,
                      "results": results, "goal": "bf16+cache rss_ratio <= 0.6"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
