"""Loading a BLIP captioning model: a Hugging Face id, a local folder, or a synthetic tiny one.

    load_captioner(name, device="auto") -> Captioner(model, processor, device, dtype, name)

A Hugging Face id resolves through the HF cache and honours HF_HUB_OFFLINE; when the weights are not
there (offline, no network, a typo) the user gets one ModelError naming the model and how to
download it beforehand. CUDA runs in fp16, the CPU in fp32.

`synthetic:blip-tiny` is BlipForConditionalGeneration built from configs with seeded random weights
and a small English word-piece vocabulary, offline. It captions a 64 px image in milliseconds on a
CPU and writes (random) words: tests and `loradeck demo` use it. It is built once into the cache
directory and loaded from there like any local folder.

Heavy imports (torch, transformers) happen inside functions: importing this module is cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradeck.trainer import hub_access
from loradeck.trainer.cache_dir import CACHE_ENV, cache_dir  # noqa: F401 (CACHE_ENV: callers name it from here)
from loradeck.trainer.errors import ConfigError, ModelError

DEFAULT_MODEL = "Salesforce/blip-image-captioning-large"
SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_MODELS = ("blip-tiny",)
# Bump when the synthetic builder changes, so an old cached build is never reused.
_SYNTHETIC_VERSION = 2


@dataclass
class Captioner:
    """A loaded model ready for `generate`: weights on `device` in `dtype`, with its processor."""

    name: str
    model: Any       # transformers.BlipForConditionalGeneration, in eval mode
    processor: Any   # transformers.BlipProcessor (image processor + tokenizer)
    device: Any      # torch.device
    dtype: Any       # torch.dtype

    @property
    def tokenizer(self):
        return self.processor.tokenizer


def resolve_device(device: str = "auto"):
    """`auto` → the first CUDA GPU when there is one, else the CPU. Returns (torch.device, dtype)."""
    import torch  # torch: only when the captioning model loads

    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"unknown device {device!r}", hint="use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but no CUDA GPU is visible to torch",
                          hint="use --device cpu, or check the CUDA build of torch and the driver")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported for captioning", hint="use cpu or cuda")
    # fp16 halves memory and is BLIP's usual inference precision on GPUs; CPUs run fp32.
    return dev, (torch.float16 if dev.type == "cuda" else torch.float32)


def load_captioner(name: str = DEFAULT_MODEL, *, device: str = "auto") -> Captioner:
    """Load a BLIP captioning model and its processor (see the module docstring for `name`)."""
    source = _resolve_source(name)  # first: a model that is not here fails before torch is imported
    dev, dtype = resolve_device(device)
    with _quiet_transformers():
        # transformers: only when the captioning model loads
        from transformers import BlipForConditionalGeneration, BlipProcessor

        try:
            _check_is_blip(name, source)
            processor = BlipProcessor.from_pretrained(source)
            model = BlipForConditionalGeneration.from_pretrained(source, dtype=dtype)
        except Exception as e:  # noqa: BLE001 - every loading failure becomes one clear message
            raise _load_error(name, source, e) from e
    try:
        model.to(device=dev, dtype=dtype).eval()  # dtype again: transformers < 4.56 ignores `dtype=`
    except RuntimeError as e:
        if "out of memory" not in str(e).lower():
            raise
        raise ModelError(f"not enough memory on {dev} to load captioning model {name!r}",
                         hint="free the GPU (is a training run using it?) or use --device cpu") from None
    return Captioner(name=name, model=model, processor=processor, device=dev, dtype=dtype)


def _resolve_source(name: str) -> str:
    """A path or HF id that `from_pretrained` can read; builds a synthetic model on first use."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("captioning model name is empty", hint=f"for example --model {DEFAULT_MODEL}")
    name = name.strip()
    if name.startswith(SYNTHETIC_PREFIX):
        kind = name[len(SYNTHETIC_PREFIX):]
        if kind not in SYNTHETIC_MODELS:
            raise ModelError(f"unknown synthetic captioning model {name!r}",
                             hint="known: " + ", ".join(SYNTHETIC_PREFIX + k for k in SYNTHETIC_MODELS))
        return str(synthetic_model_path(kind))
    path = Path(name).expanduser()
    # An HF id is "owner/name" or "name"; anything else that does not exist is a missing folder.
    if not path.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name):
        raise ModelError(f"captioning model folder {name!r} does not exist",
                         hint=f"pass an existing folder or a Hugging Face id such as {DEFAULT_MODEL}")
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"captioning model {name!r} is not a folder",
                             hint="pass a Hugging Face id or a folder saved with save_pretrained")
        if not (path / "config.json").is_file():
            raise ModelError(f"captioning model folder {path} has no config.json",
                             hint="pass a folder saved with save_pretrained (config.json, weights, processor)")
        return str(path)
    return _hub_source(name)


def _hub_source(name: str) -> str:
    """A Hugging Face id → its cached snapshot folder (loaded with no network at all), or the id when
    the hub can be reached to download it. Not cached and offline or unreachable: ModelError at once
    (loradeck.trainer.hub_access), instead of huggingface_hub's half minute of retries."""
    snapshot = hub_access.cached_snapshot(name, needs=(("preprocessor_config.json", "processor_config.json"),))
    if snapshot is not None:
        return str(snapshot)
    offline = hub_access.offline_variable()
    why = f"{offline} is set" if offline else None
    if why is None:
        unreachable = hub_access.unreachable_reason()
        why = f"the hub cannot be reached ({unreachable})" if unreachable else None
    if why:
        raise ModelError(f"captioning model {name!r} is not in the Hugging Face cache and {why}",
                         hint=_fetch_hint(name))
    return name


def _fetch_hint(name: str) -> str:
    return (f"download it once where there is network (`hf download {name}`), or set the captioning model"
            " (--model, or [caption] model in project.toml) to a local folder")

def _load_error(name: str, source: str, exc: Exception) -> ModelError:
    """One line that names the model, says why, and how to get it onto this machine."""
    if isinstance(exc, ModelError):
        return exc
    reason = " ".join(str(exc).split()) or type(exc).__name__
    if len(reason) > 160:
        reason = reason[:157] + "..."
    if Path(source).is_dir():
        return ModelError(f"cannot load captioning model from {source}: {reason}",
                          hint="the folder must hold a BLIP captioning model and its processor")
    if not isinstance(exc, OSError):  # found, but something else is wrong with it
        return ModelError(f"cannot load captioning model {name!r}: {reason}")
    # OSError is how transformers and huggingface_hub report "no such files here and none fetched".
    offline = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
               if os.environ.get(v, "").lower() in ("1", "true", "yes", "on")]
    where = f"is not in the Hugging Face cache and {offline[0]} is set" if offline else \
        "is not in the Hugging Face cache and could not be downloaded (no network, or no such model)"
    return ModelError(f"captioning model {name!r} {where}", hint=_fetch_hint(name))


def _check_is_blip(name: str, source: str) -> None:
    from transformers import AutoConfig  # transformers: only when the captioning model loads

    model_type = getattr(AutoConfig.from_pretrained(source), "model_type", None)
    if model_type != "blip":
        raise ModelError(f"{name!r} is a {model_type or 'unknown'} model, not a BLIP captioning model",
                         hint=f"use a BLIP captioner such as {DEFAULT_MODEL}")


@contextlib.contextmanager
def _quiet_transformers():
    """Loading chatter (backend fallbacks, unused weights) is noise on the user's terminal."""
    from transformers.utils import logging as hf_logging  # transformers: only when the captioning model loads

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


# --- synthetic:blip-tiny -------------------------------------------------------------------------

# A small English vocabulary so that random weights still produce readable (if random) captions.
_WORDS = """
a an the of on in with and at by near under over behind front side top from to its
man woman person people girl boy child baby face hair eyes hand hands smile portrait
cat dog bird horse cow sheep fish flower flowers tree trees grass leaves plant garden
house building room wall window door table chair bed floor road street city car bike
sky cloud clouds sun moon night day water sea river lake beach sand mountain hill snow
red blue green yellow white black brown pink purple orange gray dark bright colorful
small large big tall long short old young little pretty soft round wooden metal
standing sitting lying walking holding wearing looking painting drawing photo picture
image close up view light shadow background style art illustration sketch anime
dress shirt hat jacket glasses book cup plate food fruit apple bread cake
""".split()


def synthetic_model_path(kind: str = "blip-tiny") -> Path:
    """The folder of a synthetic model, built on first use (atomically: a rename into place)."""
    target = cache_dir() / "synthetic" / f"{kind}-v{_SYNTHETIC_VERSION}"
    if (target / "config.json").is_file() and (target / "processor_config.json").is_file():
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    except OSError as e:
        raise ModelError(f"cannot build {SYNTHETIC_PREFIX}{kind} in {target.parent}: {e.strerror or e}",
                         hint=f"set {CACHE_ENV} to a writable folder") from None
    try:
        _build_blip_tiny(staging)
        try:
            staging.rename(target)
        except OSError:
            # Another process finished first: its build is identical (seeded), use it.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _build_blip_tiny(out: Path) -> None:
    """Write a tiny BLIP captioner (config, seeded random weights, processor) into `out`."""
    import torch  # torch: only when the captioning model loads

    with _quiet_transformers():
        # transformers: only when the captioning model loads
        from transformers import (
            AutoTokenizer,
            BlipConfig,
            BlipForConditionalGeneration,
            BlipImageProcessor,
            BlipProcessor,
        )
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    vocab = specials + sorted(set(_WORDS))
    tok_dir = out / "tokenizer-src"
    tok_dir.mkdir(parents=True)
    (tok_dir / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (tok_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "BertTokenizer", "do_lower_case": True, "bos_token": "[DEC]",
        "model_max_length": 512}), encoding="utf-8")
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
        image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
        processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    ids = {t: vocab.index(t) for t in specials}
    config = BlipConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, initializer_range=0.2),
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=128, initializer_range=0.2,
                         pad_token_id=ids["[PAD]"], bos_token_id=ids["[DEC]"], sep_token_id=ids["[SEP]"],
                         eos_token_id=ids["[SEP]"]),
        projection_dim=32,
        # Large random weights make the next-token choice clear-cut, so captions do not hinge on
        # rounding (batched and one-by-one decoding agree) and read as varied words.
        initializer_range=0.2,
    )
    torch.manual_seed(0)
    with _quiet_transformers():
        model = BlipForConditionalGeneration(config).eval()
        # Nudge the end-of-caption token up so captions end at varied lengths (mostly 5-20 words)
        # instead of always running to --max-length, like a real captioner's would.
        with torch.no_grad():
            model.text_decoder.cls.predictions.bias[ids["[SEP]"]] += 1.5
        model.save_pretrained(out)
        processor.save_pretrained(out)
    shutil.rmtree(tok_dir)
