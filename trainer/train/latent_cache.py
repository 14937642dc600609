"""Cached VAE latents and text-encoder outputs.

Latents: the VAE's posterior (mean, std) per image, so training still samples a fresh latent each
step exactly as the uncached path does; kept in memory and, optionally, on disk under
`<project>/.loradeck/latents/<vae identity>/<image sha256>_<W>x<H>.safetensors`. The key is the
image's content, its bucket size and the VAE's identity, so re-prepping an image, changing the
resolution or switching base model never reuses a stale latent.

Text embeddings: the frozen text encoder's hidden states per distinct caption, in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

from loradeck.trainer.atomic import atomic_write_bytes
from loradeck.trainer.train.data import Item, content_hash, load_pixels

# Images per VAE call while latents are cached (kohya's vae_batch_size default): caching then peaks at
# what one image needs, whatever the training batch (loradeck.trainer.gpu.vram_estimate models the same).
VAE_BATCH = 1


class LatentCache:
    """Posterior (mean, std) of each image under one VAE; `stats` counts memory/disk hits and encodes."""

    def __init__(self, vae, vae_id: str, *, disk_dir: Path | None, device, dtype):
        self.vae, self.vae_id = vae, vae_id
        self.disk_dir = disk_dir / vae_id if disk_dir else None
        self.device, self.dtype = device, dtype
        self._memory: dict[Path, tuple[Any, Any]] = {}
        self.stats = {"memory_hits": 0, "disk_hits": 0, "encoded": 0}

    def _disk_path(self, item: Item) -> Path | None:
        if not self.disk_dir:
            return None
        w, h = item.size
        return self.disk_dir / f"{content_hash(item.path)}_{w}x{h}.safetensors"

    def fill(self, items: Iterable[Item], *, batch_size: int = VAE_BATCH) -> None:
        """Make sure every item is cached (reading the disk cache, encoding what is missing)."""
        # safetensors: only when training runs, not when this module is imported
        from safetensors.torch import load_file

        missing: list[tuple[Item, Path | None]] = []
        for item in items:
            if item.path in self._memory:
                continue
            disk = self._disk_path(item)
            if disk and disk.is_file():
                try:
                    t = load_file(disk)
                    self._memory[item.path] = (t["mean"], t["std"])
                    self.stats["disk_hits"] += 1
                    continue
                except Exception:  # a truncated cache file: re-encode it
                    pass
            missing.append((item, disk))
        by_size: dict[tuple[int, int], list[tuple[Item, Path | None]]] = {}
        for entry in missing:
            by_size.setdefault(entry[0].size, []).append(entry)
        for group in by_size.values():
            for k in range(0, len(group), batch_size):
                chunk = group[k:k + batch_size]
                mean, std = encode_posterior(self.vae, [load_pixels(i) for i, _ in chunk], self.device, self.dtype)
                for j, (item, disk) in enumerate(chunk):
                    pair = (mean[j].clone(), std[j].clone())
                    self._memory[item.path] = pair
                    self.stats["encoded"] += 1
                    if disk:
                        self._write(disk, pair)

    def _write(self, path: Path, pair) -> None:
        from safetensors.torch import save  # safetensors: only when training runs, not when this module is imported

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, save({"mean": pair[0].contiguous(), "std": pair[1].contiguous()}))
        except OSError:  # a full disk only loses the disk cache, not the run
            self.disk_dir = None

    def get(self, items: Sequence[Item]):
        """Stacked (mean, std) for a batch, on the CPU in fp32."""
        import torch  # torch: only when training runs, not when this module is imported

        self.fill(items)
        self.stats["memory_hits"] += len(items)
        means, stds = zip(*(self._memory[i.path] for i in items))
        return torch.stack(means), torch.stack(stds)


def encode_posterior(vae, pixels: list, device, dtype):
    """(mean, std) of the VAE posterior for a list of same-size pixel tensors; fp32 on the CPU."""
    import torch  # torch: only when training runs, not when this module is imported

    with torch.inference_mode():
        batch = torch.stack(pixels).to(device=device, dtype=dtype)
        dist = vae.encode(batch).latent_dist
        return dist.mean.float().cpu(), dist.std.float().cpu()


def sample_latents(mean, std, vae_config, generator):
    """Scaled latents drawn from the posterior with `generator` (CPU), as the VAE's sample() would."""
    import torch  # torch: only when training runs, not when this module is imported

    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
    latents = mean + std * noise
    shift = vae_config.get("shift_factor") or 0.0
    return (latents - shift) * vae_config["scaling_factor"]


class TextEmbeddingCache:
    """Hidden states of the frozen text encoder per caption (the conditioning the UNet sees)."""

    def __init__(self):
        self._memory: dict[str, Any] = {}

    def fill(self, captions: Iterable[str], encode, *, batch_size: int = 16) -> None:
        """`encode` returns a tensor, or a tuple of tensors (SDXL: hidden states and pooled embedding)."""
        todo = sorted({c for c in captions if c not in self._memory})
        for k in range(0, len(todo), batch_size):
            chunk = todo[k:k + batch_size]
            hidden = encode(chunk)
            for j, caption in enumerate(chunk):
                self._memory[caption] = tuple(h[j].clone() for h in hidden) if isinstance(hidden, tuple) \
                    else hidden[j].clone()

    def get(self, captions: Sequence[str]):
        """The cached outputs of `captions`, stacked (a tuple of stacks when the encoder returned a tuple)."""
        import torch  # torch: only when training runs, not when this module is imported

        rows = [self._memory[c] for c in captions]
        if rows and isinstance(rows[0], tuple):
            return tuple(torch.stack(parts) for parts in zip(*rows))
        return torch.stack(rows)

    def __len__(self) -> int:
        return len(self._memory)

    def __contains__(self, caption: str) -> bool:
        return caption in self._memory
