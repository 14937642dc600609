"""Memory per image of BLIP-large captioning, to choose the default GPU batch size.

    python bench/bench_caption_memory.py [--batch-sizes 1,2] [--beams 3] [--max-length 20] [--device auto]

Builds the BLIP-large architecture (Salesforce/blip-image-captioning-large: ViT-L/16 at 384 px,
BERT-base decoder with cross-attention) with random weights, offline, and captions random pixels
with beam search at a fixed caption length. For each batch size it prints one JSON line with:
- `cache_mb_per_image`: the exact size of the decoder's key/value cache at the end of generation
  (self- and cross-attention, all beams), divided by the batch size, in the model's dtype;
- on CUDA, `peak_mb_per_image`: torch's peak allocation above the weights, divided by the batch size,
  and the seconds per image.
Random weights do not change shapes, so the memory figures hold for the real checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def blip_large(dtype, device):
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration

    config = BlipConfig(
        vision_config=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                           image_size=384, patch_size=16),
        text_config=dict(vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                         num_attention_heads=12, max_position_embeddings=512, bos_token_id=30522,
                         sep_token_id=102, pad_token_id=0, eos_token_id=2),
        projection_dim=512)
    torch.manual_seed(0)
    return BlipForConditionalGeneration(config).to(device=device, dtype=dtype).eval()


def tensor_bytes(obj, seen=None) -> int:
    """Bytes of every tensor reachable from `obj` (a transformers Cache), each counted once."""
    import torch

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(o, seen) for o in obj)
    if isinstance(obj, dict):
        return sum(tensor_bytes(o, seen) for o in obj.values())
    if hasattr(obj, "__dict__"):
        return sum(tensor_bytes(o, seen) for o in vars(obj).values())
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch-sizes", default="1,2")
    ap.add_argument("--beams", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=20)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    import torch

    from loradeck.trainer.captions.blip_model import resolve_device

    device, dtype = resolve_device(args.device)
    model = blip_large(dtype, device)
    params = sum(p.numel() for p in model.parameters())
    cuda = device.type == "cuda"
    weights = torch.cuda.memory_allocated(device) if cuda else params * torch.finfo(dtype).bits // 8
    print(json.dumps({"model": "blip-large architecture (random weights)", "device": str(device),
                      "dtype": str(dtype), "params_m": round(params / 1e6, 1), "weights_mb": round(weights / 2**20)}))
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        pixels = torch.randn(bs, 3, 384, 384, device=device, dtype=dtype)
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(pixel_values=pixels, num_beams=args.beams, min_new_tokens=args.max_length,
                                 max_new_tokens=args.max_length, return_dict_in_generate=True)
        if cuda:
            torch.cuda.synchronize(device)
        took = time.perf_counter() - start
        cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        row = {"batch_size": bs, "beams": args.beams, "caption_tokens": args.max_length,
               "cache_mb_per_image": round(tensor_bytes(cache) / bs / 2**20, 1),
               "seconds_per_image": round(took / bs, 3)}
        if cuda:
            row["peak_mb_per_image"] = round((torch.cuda.max_memory_allocated(device) - weights) / bs / 2**20, 1)
        print(json.dumps(row))
        del out, pixels


if __name__ == "__main__":
    main()
