"""Which architecture a base model is, read from configs or tensor names without loading weights.

    sd1     UNet cross-attention width 768, one CLIP text encoder (SD 1.x and its fine-tunes)
    sdxl    UNet with `addition_embed_type = "text_time"` and two text encoders (CLIP ViT-L + OpenCLIP bigG)

Anything else (SD 2.x, SD3, Flux, an unknown layout) is refused when the run's config is resolved,
before a run folder exists, with a one-line reason. Pure Python (no torch), and no network: the CLI and
the TUI resolve configs on every edit. A model whose architecture cannot be read yet (a hub id whose
configs are not in the HF cache) is `None` here; creating a run fetches its two configs
(loradeck.trainer.config.hub_model_family) and refuses it then, still before a run folder exists.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from loradeck.trainer.errors import ModelError

SD1, SDXL = "sd1", "sdxl"
LABELS = {SD1: "SD 1.x", SDXL: "SDXL"}
# kohya's ss_base_model_version of each family (a v-prediction SD1 model gets the `_v` suffix).
BASE_MODEL_VERSION = {SD1: "sd_v1", SDXL: "sdxl_base_v1-0"}
SUPPORTED = "loradeck trains SD 1.x and SDXL LoRAs"
_SYNTHETIC = {"synthetic:tiny": SD1, "synthetic:sd15": SD1, "synthetic:sdxl-tiny": SDXL, "synthetic:sdxl": SDXL}
# Pixel granularity (see `pixel_granularity`) of the standard architectures and of the synthetic models
# (loradeck.trainer.train.synthetic_sd: the tiny ones have 2-block VAEs and UNets).
_GRANULARITY = {SD1: 64, SDXL: 32}
_SYNTHETIC_GRANULARITY = {"synthetic:tiny": 4, "synthetic:sd15": 64, "synthetic:sdxl-tiny": 4, "synthetic:sdxl": 32}


def unsupported(what: str) -> ModelError:
    return ModelError(f"base model is {what}: not supported ({SUPPORTED})",
                      hint="pick an SD 1.x or SDXL base model (a diffusers folder, a hub id or a .safetensors file)")


def from_unet_config(config: dict) -> str:
    """sd1 | sdxl from a diffusers UNet2DConditionModel config; ModelError for other UNets."""
    if config.get("addition_embed_type") == "text_time":
        return SDXL
    width = config.get("cross_attention_dim")
    if isinstance(width, list):
        width = width[0] if width else None
    if width == 1024:
        return _refuse("SD 2.x (OpenCLIP-H text conditioning, cross-attention width 1024)")
    if config.get("addition_embed_type") or config.get("class_embed_type"):
        return _refuse(f"a UNet with {config.get('addition_embed_type') or config.get('class_embed_type')} "
                       "conditioning (not SD 1.x or SDXL)")
    return SD1


def _refuse(what: str) -> str:
    raise unsupported(what)


def from_folder(folder: Path) -> str | None:
    """The family of a diffusers folder; None when it has no readable UNet config (the loader reports it)."""
    index = read_json(folder / "model_index.json") or {}
    pipeline = str(index.get("_class_name", ""))
    if "transformer" in index or (folder / "transformer").is_dir():
        return _refuse(f"a transformer model ({pipeline or 'no UNet'}: SD3, Flux or similar)")
    unet = read_json(folder / "unet" / "config.json")
    if unet is None:
        return None
    family = from_unet_config(unet)
    if family == SDXL and not all(_has_part(folder, index, name) for name in ("text_encoder", "text_encoder_2")):
        return _refuse("an SDXL refiner or a one-text-encoder SDXL variant (not both text_encoder and text_encoder_2)")
    return family


def _has_part(folder: Path, index: dict, name: str) -> bool:
    """Is pipeline part `name` there: its folder, or a class for it in model_index.json (a hub snapshot
    may hold only the configs; the SDXL refiner's index lists text_encoder as [null, null])."""
    entry = index.get(name)
    return (folder / name).is_dir() or (isinstance(entry, list) and any(entry))


def from_single_file(path: Path) -> str | None:
    """The family of an LDM/SGM single-file checkpoint, from its safetensors tensor names (None: a pickle)."""
    keys = safetensors_keys(path)
    if keys is None:
        return None
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return SDXL
    if any(k.startswith(("model.diffusion_model.joint_blocks.", "joint_blocks.")) for k in keys):
        return _refuse("SD3 (MMDiT)")
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for k in keys):
        return _refuse("Flux")
    if any(k.startswith("conditioner.embedders.0.") for k in keys):
        return _refuse("an SDXL refiner or a one-text-encoder SGM model")
    if any(k.startswith("cond_stage_model.model.") for k in keys):
        return _refuse("SD 2.x (OpenCLIP-H text encoder)")
    if any(k.startswith("model.diffusion_model.") for k in keys):
        return SD1
    return None  # the loader says what it is not


def from_hub_cache(repo_id: str) -> str | None:
    """The family of a hub model whose configs are in the HF cache (nothing is downloaded here)."""
    try:
        from huggingface_hub import try_to_load_from_cache  # huggingface_hub: only for a hub id
    except ImportError:
        return None
    found = {}
    for name in ("model_index.json", "unet/config.json"):
        try:
            path = try_to_load_from_cache(repo_id, name)
        except Exception:  # an invalid repo id: the loader reports it
            return None
        if isinstance(path, str):
            found[name] = Path(path)
    if "unet/config.json" not in found:
        return None
    return from_folder(found["unet/config.json"].parent.parent)


def detect(base_model: str) -> str | None:
    """The family a base-model string names (ModelError for an unsupported one, None if not yet known)."""
    if not isinstance(base_model, str) or not base_model.strip():
        return None
    if base_model.startswith("synthetic:"):
        return _SYNTHETIC.get(base_model)  # an unknown synthetic kind is refused by the loader
    path = Path(base_model).expanduser()
    if path.is_dir():
        return from_folder(path)
    if path.is_file():
        return from_single_file(path)
    if "/" in base_model and not base_model.startswith(("/", ".", "~")):
        return from_hub_cache(base_model)
    return None


def granularity(vae_blocks: int, unet_blocks: int) -> int:
    """The pixel multiple a training image is cropped to: the VAE's downsampling (2 per block after the
    first) times the UNet's (2 per block after the first), so every latent survives the UNet's down path."""
    return 2 ** (vae_blocks - 1) * 2 ** (unet_blocks - 1)


def pixel_granularity(base_model: str) -> int | None:
    """`granularity` of a base model from its configs alone (no weights, no network); the standard value
    of its family for a single-file checkpoint; None while it cannot be known (a hub id not in the cache)."""
    if not isinstance(base_model, str) or not base_model.strip():
        return None
    if base_model.startswith("synthetic:"):
        return _SYNTHETIC_GRANULARITY.get(base_model)
    path = Path(base_model).expanduser()
    folder = path if path.is_dir() else None
    if folder is None and not path.exists() and "/" in base_model and not base_model.startswith(("/", ".", "~")):
        folder = hub_cache_folder(base_model)
    if folder is not None:
        vae, unet = read_json(folder / "vae" / "config.json"), read_json(folder / "unet" / "config.json")
        blocks = [len(c.get("block_out_channels") or []) if c else 0 for c in (vae, unet)]
        return granularity(*blocks) if all(blocks) else None
    try:
        family = detect(base_model)
    except ModelError:
        return None
    return _GRANULARITY.get(family) if family else None


def hub_cache_folder(repo_id: str) -> Path | None:
    """The snapshot folder of a hub model whose UNet and VAE configs are in the HF cache (no download)."""
    try:
        from huggingface_hub import try_to_load_from_cache  # light, but only hub ids need it
    except ImportError:
        return None
    folders = set()
    for name in ("unet/config.json", "vae/config.json"):
        try:
            found = try_to_load_from_cache(repo_id, name)
        except Exception:  # an invalid repo id: the loader reports it
            return None
        if not isinstance(found, str):
            return None
        folders.add(Path(found).parent.parent)
    return folders.pop() if len(folders) == 1 else None


def safetensors_keys(path: Path) -> list[str] | None:
    """Tensor names of a .safetensors file from its header alone; None for other files."""
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        with open(path, "rb") as fh:
            size = struct.unpack("<Q", fh.read(8))[0]
            if size > 200 * 1024 * 1024:
                return None
            header = json.loads(fh.read(size))
    except (OSError, struct.error, ValueError):
        return None
    return [k for k in header if k != "__metadata__"]


def read_json(path: Path) -> dict | None:
    """A JSON object from `path`; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
