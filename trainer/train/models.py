"""Base models: turn the one string that names a base model into loaded SD1.x or SDXL components.

    synthetic:tiny | synthetic:sd15     built offline from configs (loradeck.trainer.train.synthetic_sd)
    synthetic:sdxl-tiny | synthetic:sdxl  the same, SDXL (two text encoders, text_time UNet)
    /path/to/folder                     a local diffusers folder (unet/, vae/, text_encoder/, ...)
    /path/to/model.safetensors          a single-file (A1111 / original LDM layout) checkpoint, no network
                                        (loradeck.trainer.train.single_file)
    owner/name                          a Hugging Face id, through the HF cache; HF_HUB_OFFLINE honoured

Weights load only from safetensors (or, for a single-file `.ckpt`, `torch.load(weights_only=True)`):
no arbitrary user pickle is ever unpickled. Components come back in fp32 on the CPU; the training
loop decides dtype and device. The family (loradeck.trainer.config.model_family) is read before anything loads;
an unsupported architecture is refused then.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loradeck.trainer.config import model_family
from loradeck.trainer.errors import ModelError
from loradeck.trainer.train import dtype_loading, single_file, synthetic_sd

# The files of a diffusers SD1.x repo that training needs (safetensors only).
HUB_PATTERNS = ["model_index.json", "scheduler/*.json", "tokenizer/*", "text_encoder/config.json",
                "text_encoder/model.safetensors", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                "tokenizer_2/*", "text_encoder_2/config.json", "text_encoder_2/model.safetensors"]
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth")
_WHERE = ("--base-model takes a Hugging Face id, a diffusers folder, an SD1.x .safetensors file, "
          "or synthetic:tiny / synthetic:sd15")


@dataclass
class BaseModel:
    """The loaded components of an SD1.x or SDXL model and what the trainer needs to know about it."""

    name: str
    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    scheduler_config: dict[str, Any]
    source: str  # synthetic | folder | single_file | hub
    extra: dict[str, Any] = field(default_factory=dict)
    family: str = "sd1"  # loradeck.trainer.config.model_family: sd1 | sdxl
    tokenizer_2: Any = None  # SDXL's second (OpenCLIP bigG) tokenizer and text encoder (with projection)
    text_encoder_2: Any = None

    @property
    def prediction_type(self) -> str:
        return self.scheduler_config.get("prediction_type", "epsilon")

    def noise_scheduler(self):
        from diffusers import DDPMScheduler  # diffusers: only when a model loads; the CLI imports this module

        return DDPMScheduler.from_config(self.scheduler_config)


def kind_of(name: str) -> str:
    """Which loader a base-model string goes to (without loading anything)."""
    if not isinstance(name, str) or not name.strip():
        raise ModelError("no base model given", hint="set base_model (e.g. --base-model synthetic:tiny)")
    if synthetic_sd.is_synthetic(name):
        return "synthetic"
    path = Path(name).expanduser()
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in SINGLE_FILE_SUFFIXES:
        if not path.is_file():
            raise ModelError(f"base model file {path} does not exist", hint=_WHERE)
        return "single_file"
    if name.startswith(("/", "./", "../", "~")) or os.sep in name.strip("/").replace("/", "", 1):
        raise ModelError(f"base model folder {path} does not exist", hint=_WHERE)
    return "hub"


def load_base_model(name: str, *, dtype=None, vae_dtype=None) -> BaseModel:
    """Load the model `name` names; ModelError with a one-line reason and a hint on any failure.

    `dtype` / `vae_dtype` (torch dtypes): a diffusers folder's frozen weights are read straight into the
    run's dtypes, never held as a whole fp32 copy (loradeck.trainer.train.dtype_loading); None: as stored
    in fp32, the caller casts."""
    kind = kind_of(name)
    if kind == "synthetic":
        parts = synthetic_sd.build(synthetic_sd.kind_of(name))
        return BaseModel(name=name, source=kind, family=model_family.detect(name), **parts)
    if kind == "single_file":
        path = Path(name).expanduser()
        family = model_family.from_single_file(path) or model_family.SD1
        parts = single_file.load_sdxl(path) if family == model_family.SDXL else single_file.load(path)
        return BaseModel(name=name, source=kind, family=family, **parts)
    folder = Path(name).expanduser() if kind == "folder" else hub_snapshot(name)
    family = model_family.from_folder(folder) or model_family.SD1
    return BaseModel(name=name, source=kind, family=family,
                     **load_folder(folder, label=name, family=family, dtype=dtype, vae_dtype=vae_dtype))


def hub_snapshot(repo_id: str) -> Path:
    """The local snapshot folder of a Hugging Face repo (downloaded unless offline)."""
    import huggingface_hub  # huggingface_hub: only when a model loads; the CLI imports this module
    from huggingface_hub import constants

    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        return Path(huggingface_hub.snapshot_download(repo_id, allow_patterns=HUB_PATTERNS,
                                                      local_files_only=offline))
    except Exception as e:  # the hub raises many types: offline miss, 404, gated, no network
        where = "is not in the Hugging Face cache and HF_HUB_OFFLINE is set" if offline else \
            f"could not be downloaded ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
        raise ModelError(f"base model {repo_id} {where}",
                         hint=f"pre-download it on a machine with network: hf download {repo_id} "
                              f"(or huggingface-cli download {repo_id}), or point --base-model at a local "
                              "folder or .safetensors file") from None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path} is missing: not a diffusers SD1.x model folder",
                         hint="a model folder needs unet/, vae/, text_encoder/, tokenizer/ and scheduler/") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path} is not valid JSON ({e})") from None


def load_folder(folder: Path, *, label: str | None = None, family: str = "sd1", dtype=None,
                vae_dtype=None) -> dict[str, Any]:
    """Components from a diffusers folder (safetensors weights only); SDXL adds tokenizer_2/text_encoder_2.
    With `dtype`, the UNet and text encoders load in it and the VAE in `vae_dtype` (or `dtype`)."""
    # diffusers, transformers: only when a model loads; the CLI imports this module
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    def load(cls, sub: str, as_dtype, transformers_model: bool = False):
        if as_dtype is None:
            return cls.from_pretrained(folder / sub, use_safetensors=True)
        return dtype_loading.load_component(cls, folder / sub, as_dtype, transformers_model=transformers_model)

    label = label or str(folder)
    scheduler_config = _read_json(folder / "scheduler" / "scheduler_config.json")
    sdxl_subs = ("text_encoder_2", "tokenizer_2") if family == "sdxl" else ()
    for sub in ("unet", "vae", "text_encoder", "tokenizer", *sdxl_subs):
        if not (folder / sub).is_dir():
            raise ModelError(f"base model {label}: {sub}/ is missing from {folder}",
                             hint="a model folder needs unet/, vae/, text_encoder/, tokenizer/ and scheduler/")
    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        text_encoder = load(CLIPTextModel, "text_encoder", dtype, transformers_model=True)
        vae = load(AutoencoderKL, "vae", vae_dtype or dtype)
        unet = load(UNet2DConditionModel, "unet", dtype)
        extra = {}
        if family == "sdxl":
            # transformers: only when a model loads; the CLI imports this module
            from transformers import CLIPTextModelWithProjection

            extra = {"tokenizer_2": CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
                     "text_encoder_2": load(CLIPTextModelWithProjection, "text_encoder_2", dtype,
                                            transformers_model=True)}
            extra["text_encoder_2"].eval()
    except (OSError, ValueError, EnvironmentError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise ModelError(f"base model {label} could not be loaded: {first}",
                         hint="weights must be .safetensors files in the diffusers layout") from None
    for module in (text_encoder, vae, unet):
        module.eval()
    return {"tokenizer": tokenizer, "text_encoder": text_encoder, "vae": vae, "unet": unet,
            "scheduler_config": dict(scheduler_config), **extra}


def resolve_prediction_type(config_value: str, model: BaseModel) -> str:
    """`auto` reads the scheduler config; an explicit value overrides it."""
    return model.prediction_type if config_value == "auto" else config_value


def vae_identity(vae) -> str:
    """A content fingerprint of a VAE (config + a few weight tensors) for latent-cache keys."""
    h = hashlib.sha256(json.dumps(dict(vae.config), sort_keys=True, default=str).encode())
    state = vae.state_dict()
    for key in ("encoder.conv_in.weight", "encoder.conv_out.weight", "quant_conv.weight"):
        if key in state:
            h.update(state[key].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def base_model_version(model: BaseModel) -> str:
    """kohya's ss_base_model_version (an SD1.x v-prediction model noted as kohya does for SD2)."""
    version = model_family.BASE_MODEL_VERSION[model.family]
    return version + "_v" if model.family == model_family.SD1 and model.prediction_type != "epsilon" else version
