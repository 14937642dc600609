"""SDXL conditioning for the training loop: both text encoders, the pooled embedding, the time ids.

    prompt embeds  [CLIP ViT-L penultimate hidden states ; OpenCLIP bigG penultimate hidden states]
                   (768 + 1280 = 2048 wide for SDXL base), the UNet's cross-attention input
    text_embeds    bigG's pooled output through its text projection (1280)
    time_ids       (original height, original width, crop top, crop left, target height, target width)

The penultimate layer for both encoders is SDXL's own convention (its reference pipeline and
kohya's trainer encode that way). The time ids come from what prep recorded for each image in
`.loradeck/prep.json` (the original's size and the centre crop's top-left); an image prep did not
record (prepared before it recorded them, or put in dataset/ by hand) is conditioned as uncropped
at its own size. The target size is the image's bucket.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from loradeck.trainer.dataset.prep import MANIFEST_NAME


class SdxlText:
    """Encodes captions with both tokenizers/encoders: returns (prompt_embeds, pooled)."""

    def __init__(self, tokenizers: Sequence[Any], text_encoders: Sequence[Any], device):
        self.tokenizers, self.text_encoders, self.device = list(tokenizers), list(text_encoders), device

    def __call__(self, captions: Sequence[str]):
        import torch  # torch: only when training runs, not when this module is imported

        hidden, pooled = [], None
        for tokenizer, encoder in zip(self.tokenizers, self.text_encoders):
            ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids.to(self.device)
            out = encoder(ids, output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled = out[0]  # the last encoder is CLIPTextModelWithProjection: its text_embeds
        return torch.cat(hidden, dim=-1), pooled


def micro_conditioning(project_dir: str | Path) -> dict[str, tuple[tuple[int, int], tuple[int, int]]]:
    """dataset file name -> ((original w, h), (crop left, top)) from prep's manifest (what it has)."""
    path = Path(project_dir) / ".loradeck" / MANIFEST_NAME
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = entries.get("entries", entries) if isinstance(entries, dict) else {}
    out = {}
    for entry in entries.values() if isinstance(entries, dict) else ():
        if isinstance(entry, dict) and entry.get("output") and entry.get("original") and entry.get("crop"):
            out[entry["output"]] = (tuple(entry["original"]), tuple(entry["crop"]))
    return out


def time_ids(items: Sequence[Any], recorded: dict):
    """The (batch, 6) add_time_ids tensor for `items` (train_data.Item: path, size=(w, h))."""
    import torch  # torch: only when training runs, not when this module is imported

    rows = []
    for item in items:
        w, h = item.size
        (ow, oh), (left, top) = recorded.get(Path(item.path).name, ((w, h), (0, 0)))
        rows.append([oh, ow, top, left, h, w])
    return torch.tensor(rows, dtype=torch.float32)


def sample_time_ids(resolution: int, count: int):
    """Samples are generated uncropped at the training resolution."""
    import torch  # torch: only when training runs, not when this module is imported

    return torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * count, dtype=torch.float32)


def unet_kwargs(pooled, ids, dtype) -> dict[str, Any]:
    """The extra UNet forward arguments of an SDXL step."""
    return {"added_cond_kwargs": {"text_embeds": pooled.to(dtype), "time_ids": ids.to(pooled.device, dtype)}}
