"""What validation and atomic publishing cost on SD1.5-sized LoRA files, against a plain copy.

Builds kohya LoRA files with the real SD1.5 module shapes (UNet 'kohya' targets + CLIP text encoder,
random weights, fp16) at the given ranks, then times, per file:
  plain_copy   shutil.copyfile + fsync (what `cp` to the share costs at best)
  rules        loradeck.trainer.lora.validate.check_rules (header, keys, shapes, every weight finite/non-zero, hash)
  publish      loradeck.trainer.lora.publish.publish_adapter (copy with header, fsync, rules on the copy, sidecar, link)

usage: python bench/bench_publish.py [--ranks 32 128] [--rounds 3] [--dir DIR]
Prints one JSON line per rank.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KOHYA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out")
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def sd15_lora(rank: int) -> dict:
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from loradeck.trainer.lora.file_format import kohya_key

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)
        te = CLIPTextModel(CLIPTextConfig())
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for prefix, model, targets, root in (("lora_unet", unet, KOHYA_TARGETS, ""), ("lora_te", te, TE_TARGETS, "text_model.")):
        for name, m in model.named_modules():
            if not name.endswith(targets) or not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                continue
            key = kohya_key(prefix, root + name)
            fan_in = m.in_features if isinstance(m, torch.nn.Linear) else m.in_channels
            fan_out = m.out_features if isinstance(m, torch.nn.Linear) else m.out_channels
            extra = (1, 1) if isinstance(m, torch.nn.Conv2d) else ()
            tensors[key + ".lora_down.weight"] = torch.randn(rank, fan_in, *extra, generator=g) * 0.01
            tensors[key + ".lora_up.weight"] = torch.randn(fan_out, rank, *extra, generator=g) * 0.01
            tensors[key + ".alpha"] = torch.tensor(float(rank))
    return tensors


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def plain_copy(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    with open(dst, "rb+") as fh:
        os.fsync(fh.fileno())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, nargs="+", default=[32, 128])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    a = ap.parse_args()

    from loradeck.trainer.config.train_config import TrainConfig
    from loradeck.trainer.lora.file_format import kohya_metadata, save_kohya_lora
    from loradeck.trainer.lora.publish import publish_adapter
    from loradeck.trainer.lora.validate import check_rules

    work = Path(a.dir or tempfile.mkdtemp(prefix="bench-publish-"))
    for rank in a.ranks:
        src = work / f"sd15-r{rank}.safetensors"
        meta = kohya_metadata(config=TrainConfig(rank=rank, alpha=rank).to_dict(), base_model="sd15",
                              base_model_version="sd_v1", resolution=512, tag_frequency={"1_x": {"x": 1}},
                              num_train_images=20, steps=1000, epochs=10, output_name="bench")
        save_kohya_lora(src, sd15_lora(rank), meta)
        times = {"plain_copy": [], "rules": [], "publish": []}
        for i in range(a.rounds):
            dest = work / f"share-{rank}-{i}"
            dest.mkdir()
            times["plain_copy"].append(timed(lambda: plain_copy(src, dest / "copy.safetensors")))
            report = None

            def rules():
                nonlocal report
                report = check_rules(src)
            times["rules"].append(timed(rules))
            assert report.ok, report.summary()
            times["publish"].append(timed(lambda: publish_adapter(src, dest, "bench", who="bench")))
            shutil.rmtree(dest)
        med = {k: round(statistics.median(v), 3) for k, v in times.items()}
        print(json.dumps({"rank": rank, "size_mb": round(src.stat().st_size / 1e6, 1),
                          "modules": report.modules, "median_s": med, "rounds": a.rounds}))
        src.unlink()


if __name__ == "__main__":
    main()
