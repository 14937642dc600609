"""Training speed, memory and learning against the plain diffusers + peft recipe.

Both sides are whole processes on the same model folder, data and knobs, back to back, alternating
order each round (the machine is shared: compare ratios, not absolute seconds):

    recipe     python ../shared/bench/ref_lora_loop.py MODEL DATA STEPS --batch B --res R --rank R --lr X
    loradeck   python -m loradeck.trainer.train.process RUN_DIR   (the process `loradeck train` starts)
    loradeck+cache   the same with cache_latents + cache_text_embeddings (in memory, encoding included)

The recipe runs STEPS+1 optimizer steps (its first is an untimed warm-up), so loradeck runs STEPS+1
too. Wall time and peak RSS come from wait4() on each child, so imports and model loading count.

    python bench/bench_train.py                         # tiny model, 64 px, batch 2, rank 4
    python bench/bench_train.py --full --steps 3 --res 256 --batch 1 --rounds 1 --no-cache-variant
    python bench/bench_train.py --learning --seeds 0 1 2 3 4 --rounds 0   # denoising loss of both LoRAs, per seed
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LORADECK_SHARED_BENCH", REPO.parent / "shared" / "bench"))
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))


TIME = "/usr/bin/time"  # GNU time (Debian's `time` package)


def run_measured(cmd: list[str], env: dict) -> dict:
    """Like timed(), but with the child's own peak RSS.

    Linux carries a process's peak RSS into its children's ru_maxrss across fork and exec, so wait4() on
    a child of this (large) bench process reports at least this process's own peak. GNU time is a fresh,
    small process that forks the command: its %M is the command's own peak. Without GNU time the
    figure falls back to wait4() and is marked `rss_floor_from_parent`."""
    import tempfile

    start = time.perf_counter()
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as report:
        wrapped = [TIME, "-f", "%M", "-o", report.name, *cmd] if os.path.exists(TIME) else cmd
        proc = subprocess.Popen(wrapped, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        kib = report.read().strip().splitlines()[-1:] if wrapped is not cmd else []
    own = int(kib[0]) if kib and kib[0].isdigit() else None
    result = {"wall": round(wall, 2), "cpu": round(usage.ru_utime + usage.ru_stime, 2),
              "peak_rss_mb": round((own if own is not None else usage.ru_maxrss) / 1024, 1),
              "code": proc.returncode, "output": out.decode(errors="replace")}
    if own is None:
        result["rss_floor_from_parent"] = True
    return result


def prepare(work: Path, *, full: bool, images: int, res: int) -> tuple[Path, Path]:
    """The model folder (synthetic, saved once) and a project whose dataset/ holds res x res images."""
    from PIL import Image

    from loradeck.trainer.train import synthetic_sd

    model = work / ("sd15" if full else "tiny")
    if not (model / "model_index.json").exists():
        synthetic_sd.save("sd15" if full else "tiny", model)
    project = work / f"project-{images}-{res}"
    dataset = project / "dataset"
    if not dataset.is_dir():
        sys.path.insert(0, str(SHARED))
        import make_data

        raw = work / f"raw-{images}"
        make_data.make(raw, images)
        dataset.mkdir(parents=True)
        for p in sorted(raw.iterdir()):
            if p.suffix == ".txt":
                (dataset / p.name).write_bytes(p.read_bytes())
            else:  # prepared = already at its bucket size, as `loradeck prep` leaves it
                with Image.open(p) as im:
                    im.convert("RGB").resize((res, res), Image.BICUBIC).save(dataset / p.name)
    return model, project


def write_run(run_dir: Path, project: Path, model: Path, a, *, cache: bool, disk: bool = False,
              out_name: str = "lora", seed: int = 0) -> Path:
    import shutil

    import tomlkit

    from loradeck.trainer.config.train_config import from_mapping

    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    cfg = from_mapping(dict(
        base_model=str(model), max_train_steps=a.steps + 1, max_train_epochs=None, batch_size=a.batch,
        rank=a.rank, alpha=float(a.rank), learning_rate=a.lr, resolution=a.res, mixed_precision="no",
        max_grad_norm=0.0, weight_decay=0.01, cache_latents=cache, cache_latents_to_disk=disk,
        cache_text_embeddings=cache, output_name=out_name, seed=seed))
    doc = {k: v for k, v in cfg.to_dict().items() if v is not None}
    doc["dataset"] = {"project_dir": str(project), "caption_extension": ".txt", "trigger_word": ""}
    (run_dir / "config.toml").write_text(tomlkit.dumps(doc))
    return run_dir


def compare_learning(a, model: Path, project: Path, env: dict) -> dict:
    """Train both sides once per seed (untimed), then the denoising loss of each exported file.

    One seed is one draw of data order, adapter init, posterior samples, noise and timesteps; a
    difference smaller than the spread across seeds is a tie, so the mean over seeds is compared.
    """
    from lora_eval import denoising_loss

    images = sorted(p for p in (project / "dataset").iterdir() if p.suffix != ".txt")
    base_loss = denoising_loss(model, images, None, resolution=a.res)
    per_seed = []
    for seed in a.seeds:
        recipe_out = a.work / "recipe" / f"recipe_lora_seed{seed}.safetensors"
        recipe_out.parent.mkdir(exist_ok=True)
        recipe = [sys.executable, str(SHARED / "ref_lora_loop.py"), str(model), str(project / "dataset"),
                  str(a.steps), "--batch", str(a.batch), "--res", str(a.res), "--rank", str(a.rank),
                  "--lr", str(a.lr), "--seed", str(seed), "--out", str(recipe_out)]
        run_dir = write_run(a.work / f"run-learn-{seed}", project, model, a, cache=False, seed=seed)
        for cmd in (recipe, [sys.executable, "-m", "loradeck.trainer.train.process", str(run_dir)]):
            m = run_measured(cmd, env)
            if m["code"] != 0:
                print(m["output"][-3000:], file=sys.stderr)
                raise SystemExit(f"learning run failed: {' '.join(cmd[:3])}")
        ours = base_loss - denoising_loss(model, images, run_dir / "lora.safetensors", resolution=a.res)
        theirs = base_loss - denoising_loss(model, images, recipe_out, resolution=a.res)
        per_seed.append({"seed": seed, "loradeck_reduction": round(ours, 5), "recipe_reduction": round(theirs, 5)})
        print(json.dumps({"learning": per_seed[-1]}), flush=True)
    mean = lambda key: statistics.mean(x[key] for x in per_seed)  # noqa: E731
    return {"base_loss": round(base_loss, 5), "per_seed": per_seed,
            "loradeck_reduction_mean": round(mean("loradeck_reduction"), 5),
            "recipe_reduction_mean": round(mean("recipe_reduction"), 5),
            "ratio_of_means": round(mean("loradeck_reduction") / mean("recipe_reduction"), 4)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--res", type=int, default=64)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--full", action="store_true", help="the full SD1.5 architecture (synthetic:sd15)")
    ap.add_argument("--no-cache-variant", action="store_true", help="skip the cached-latents run")
    ap.add_argument("--learning", action="store_true", help="compare the denoising loss of both LoRAs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0],
                    help="with --learning: train both sides once per seed (data order, init, noise) and compare")
    ap.add_argument("--work", type=Path, default=REPO / "bench" / "cache" / "train")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP/MKL threads for both sides (1 makes timings on a shared machine far steadier)")
    a = ap.parse_args()

    a.work.mkdir(parents=True, exist_ok=True)
    model, project = prepare(a.work, full=a.full, images=a.images, res=a.res)
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONUNBUFFERED="1")
    if a.threads:
        env.update(OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    variants = {
        "recipe": lambda: [sys.executable, str(SHARED / "ref_lora_loop.py"), str(model), str(project / "dataset"),
                           str(a.steps), "--batch", str(a.batch), "--res", str(a.res), "--rank", str(a.rank),
                           "--lr", str(a.lr), "--seed", "0"],
        "loradeck": lambda: [sys.executable, "-m", "loradeck.trainer.train.process",
                             str(write_run(a.work / "run-plain", project, model, a, cache=False))],
    }
    if not a.no_cache_variant and a.rounds:
        # cold: the latent cache is built in this process (encoding every image is part of the time);
        # warm: the on-disk cache a previous run (or `loradeck prep`) left is read back.
        variants["loradeck+cache"] = lambda: [sys.executable, "-m", "loradeck.trainer.train.process",
                                              str(write_run(a.work / "run-cache", project, model, a, cache=True))]
        variants["loradeck+disk-cache"] = lambda: [sys.executable, "-m", "loradeck.trainer.train.process",
                                                   str(write_run(a.work / "run-disk", project, model, a,
                                                                 cache=True, disk=True))]
        warm = write_run(a.work / "run-warmup", project, model, a, cache=True, disk=True)
        subprocess.run([sys.executable, "-m", "loradeck.trainer.train.process", str(warm)], env=env, cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    results: dict[str, list[dict]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(a.rounds):
        order = names if r % 2 == 0 else list(reversed(names))
        for name in order:
            m = run_measured(variants[name](), env)
            if m["code"] != 0:
                print(m["output"][-3000:], file=sys.stderr)
                raise SystemExit(f"{name} failed with exit code {m['code']}")
            results[name].append({"wall": m["wall"], "cpu": m["cpu"], "peak_rss_mb": m["peak_rss_mb"]})
            print(json.dumps({"round": r, "variant": name, **results[name][-1]}), flush=True)

    summary = {"model": "synthetic:sd15" if a.full else "synthetic:tiny", "steps": a.steps + 1, "batch": a.batch,
               "res": a.res, "rank": a.rank, "images": a.images, "rounds": a.rounds, "threads": a.threads}
    base = results["recipe"]
    for name in names if a.rounds else []:
        walls = [x["wall"] for x in results[name]]
        rss = [x["peak_rss_mb"] for x in results[name]]
        cpus = [x["cpu"] for x in results[name]]
        summary[name] = {"wall_median": statistics.median(walls), "cpu_median": statistics.median(cpus),
                         "peak_rss_max": max(rss)}
        if name != "recipe":
            summary[name]["time_ratio_per_round"] = [round(x["wall"] / b["wall"], 3)
                                                      for x, b in zip(results[name], base)]
            summary[name]["time_ratio_median"] = round(statistics.median(summary[name]["time_ratio_per_round"]), 3)
            summary[name]["cpu_ratio_median"] = round(statistics.median(
                x["cpu"] / b["cpu"] for x, b in zip(results[name], base)), 3)
            summary[name]["rss_ratio"] = round(max(rss) / max(b["peak_rss_mb"] for b in base), 3)

    if a.learning:
        summary["learning"] = compare_learning(a, model, project, env)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
