"""Is this LoRA file one that A1111, ComfyUI, kohya tools and diffusers all load?

Two checks:
  * the rules (pure Python + numpy, no torch): safetensors structure, kohya key names, complete
    down/up/alpha triples, consistent shapes, 0-dim positive alphas, finite non-zero weights, string-only
    metadata, the kohya `ss_*` keys, and `sshs_model_hash` matching the tensor bytes;
  * the load check: diffusers' `load_lora_weights` on the base model (when it is available locally),
    every module of the file must land on a layer of the model and change its output.

A diffusers/peft-layout file (dotted keys, lora_A/lora_B) fails the rules with a hint to `loradeck convert`.
`validate()` runs both; with `isolate=True` the load check runs in a subprocess so a caller that must
not import torch (the TUI) can use it. The load check takes minutes on a real base model: it reports
its phases (LOAD_PHASES) as `progress` events (task "validate", loradeck.trainer.events) to an
`on_event` callback, and stops when `should_stop()` turns true (raising children.Cancelled); isolated,
the child (`loradeck validate --events`) prints those events and its process group is ended on a stop.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from loradeck.trainer import children
from loradeck.trainer.cli_hint import command
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import make_event, parse_line
from loradeck.trainer.lora.file_format import (
    ALPHA,
    DOWN,
    TE_PREFIX,
    UNET_PREFIX,
    UP,
    LoraFileError,
    file_model_hash,
    kohya_key,
    module_path_from_kohya,
    read_header,
    split_kohya_key,
)
from loradeck.trainer.lora.sdxl_names import diffusers_to_sgm, is_sdxl_keys
from loradeck.trainer.train.models import kind_of, load_base_model

FLOAT_DTYPES = ("F16", "BF16", "F32")
# ss_* keys a file needs so A1111/kohya tools show what it is.
REQUIRED_SS_KEYS = ("ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_base_model_version",
                    "ss_output_name", "ss_tag_frequency", "ss_resolution")
_MODULE_RE = re.compile(r"^lora_(unet|te|te1|te2)_[A-Za-z0-9_]+$")
# SDXL files (kohya's layout, loradeck.trainer.lora.sdxl_names): UNet modules under SGM block names.
_SGM_UNET_RE = re.compile(r"^lora_unet_(input_blocks_\d+_1|middle_block_1|output_blocks_\d+_1)_[A-Za-z0-9_]+$")
# The load check's phases, in order: the `message` of its progress events (`done` = phases finished).
LOAD_PHASES = ("loading base model", "loading adapter", "probing")
TASK = "validate"
# An isolated load check that takes longer than this is stuck (a real SDXL load takes minutes).
LOAD_CHECK_TIMEOUT_SECONDS = 1800

OnEvent = Callable[[dict[str, Any]], None]
ShouldStop = Callable[[], bool]


@dataclass
class Problem:
    rule: str          # structure, layout, keys, triples, shapes, alpha, values, metadata, hash, load
    message: str
    severity: str = "error"  # "error" fails validation; "warning" is reported only

    def line(self) -> str:
        return f"{self.severity}: [{self.rule}] {self.message}"


@dataclass
class Report:
    path: str
    layout: str = "unknown"   # kohya, diffusers, unknown
    family: str = "sd1"       # sd1 | sdxl (trainer.config.model_family), from the keys and ss_base_model_version
    modules: int = 0
    unet_modules: int = 0
    te_modules: int = 0
    ranks: list[int] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    load_check: str = "not run"  # passed, failed, skipped: <why>, not run
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, rule: str, message: str) -> None:
        self.problems.append(Problem(rule, message))

    def warn(self, rule: str, message: str) -> None:
        self.problems.append(Problem(rule, message, "warning"))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        d.pop("metadata")
        return d

    def summary(self) -> str:
        """Human text: one line for the verdict, then one line per problem."""
        family = {"sdxl": " SDXL,", "sd1": " SD 1.x,"}.get(self.family, "") if self.layout == "kohya" else ""
        head = (f"{Path(self.path).name}: {'OK' if self.ok else 'INVALID'} ({self.layout} layout,{family}"
                f" {self.unet_modules} unet + {self.te_modules} text-encoder modules,"
                f" rank {_span(self.ranks)}, alpha {_span(self.alphas)}; load check {self.load_check})")
        return "\n".join([head, *("  " + p.line() for p in self.problems)])


def _span(values: list) -> str:
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"


class InvalidLoraError(LoradeckError):
    """A LoRA file that fails validation; `report` lists every problem."""

    def __init__(self, report: Report):
        first = report.errors[0].message if report.errors else "invalid"
        more = f" (+{len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        hint = (f"convert it with: {command('convert', report.path, 'OUT.safetensors', '--to', 'kohya')}"
                if report.layout == "diffusers" else f"see: {command('validate', report.path)}")
        super().__init__(f"{Path(report.path).name} is not a valid LoRA: {first}{more}", hint=hint)
        self.report = report


# ---------------------------------------------------------------------------------------------- rules

def looks_diffusers(keys: list[str]) -> bool:
    """Dotted diffusers/peft keys: `unet.<path>.lora_A.weight`, `<path>.lora.down.weight`, `...to_q_lora.up.weight`."""
    markers = (".lora_A.", ".lora_B.", ".lora.down.", ".lora.up.", "_lora.down.", "_lora.up.")
    return any(m in k for k in keys for m in markers)


def _read_array(fh, base: int, info: dict):
    """A tensor of the file as a float32 numpy array (bf16 widened by hand: numpy has no bf16)."""
    # numpy only when tensor values are read: listing and header checks stay light.
    import numpy as np

    start, end = (int(x) for x in info["data_offsets"])
    fh.seek(base + start)
    raw = fh.read(end - start)
    dtype = info["dtype"]
    if dtype == "F16":
        arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    elif dtype == "F32":
        arr = np.frombuffer(raw, dtype="<f4")
    elif dtype == "BF16":
        arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        return None
    return arr.reshape(info["shape"]) if arr.size == math.prod(info["shape"]) else None


def check_rules(path: str | os.PathLike) -> Report:
    """Check a file against the kohya/A1111/ComfyUI rules (no torch). Never raises for a bad file."""
    report = Report(path=str(path))
    try:
        info, metadata = read_header(path)
    except LoraFileError as e:
        report.error("structure", str(e))
        return report
    report.metadata = {str(k): v for k, v in metadata.items()}
    keys = list(info)
    if not keys:
        report.error("structure", "the file holds no tensors")
        return report
    if looks_diffusers(keys):
        report.layout = "diffusers"
        report.error("layout", "diffusers/peft key layout (dotted keys with lora_A/lora_B); A1111 and"
                               " kohya tools need the kohya layout: run `loradeck convert FILE OUT --to kohya`")
        _check_metadata(report, metadata, kohya=False)
        return report

    modules: dict[str, dict[str, dict]] = {}
    for key in keys:
        parts = split_kohya_key(key)
        if parts is None or not _MODULE_RE.match(parts[0]):
            report.error("keys", f"{key}: not a kohya LoRA key (lora_unet_/lora_te_<module> with"
                                 " .lora_down.weight, .lora_up.weight or .alpha)")
            continue
        modules.setdefault(parts[0], {})[parts[1]] = info[key]
    report.layout = "kohya" if modules else "unknown"

    version = str(metadata.get("ss_base_model_version", ""))  # what the file says it is wins over its keys
    sdxl = version.startswith("sdxl") if version.startswith(("sd_v", "sdxl")) else is_sdxl_keys(modules)
    report.family = "sdxl" if sdxl else "sd1"
    for module in modules:
        _check_module_name(report, module, sdxl)
    report.modules = len(modules)
    report.unet_modules = sum(1 for m in modules if m.startswith(UNET_PREFIX + "_"))
    report.te_modules = sum(1 for m in modules if m.startswith(TE_PREFIX))

    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        base = 8 + n
        for module, parts in sorted(modules.items()):
            _check_module(report, fh, base, module, parts)
    _check_metadata(report, metadata, kohya=True)
    if report.modules and "sshs_model_hash" in metadata:
        actual = file_model_hash(path)
        if metadata["sshs_model_hash"] != actual:
            report.error("hash", f"sshs_model_hash {str(metadata['sshs_model_hash'])[:12]}... does not match the"
                                 f" tensor data ({actual[:12]}...): the file was altered after it was written")
    elif report.modules:
        report.warn("hash", "no sshs_model_hash in the metadata (A1111 computes it on first use)")
    return report


def _check_module_name(report: Report, module: str, sdxl: bool) -> None:
    """SD1: diffusers module names, one text encoder. SDXL: SGM UNet block names and lora_te1_/lora_te2_."""
    if not sdxl:
        try:
            module_path_from_kohya(module)
        except LoraFileError as e:
            report.error("keys", str(e))
        return
    if module.startswith(TE_PREFIX + "_"):
        report.error("keys", f"{module}: an SDXL LoRA names its text encoders lora_te1_ / lora_te2_")
    elif module.startswith(UNET_PREFIX + "_") and not _SGM_UNET_RE.match(module):
        report.error("keys", f"{module}: not an SGM block name (input_blocks/middle_block/output_blocks);"
                             " A1111 and Forge drop diffusers-named UNet modules of an SDXL LoRA")


def _check_module(report: Report, fh, base: int, module: str, parts: dict[str, dict]) -> None:
    missing = [s.strip(".").split(".")[0] for s in (DOWN, UP, ALPHA) if s not in parts]
    if missing:
        report.error("triples", f"{module}: missing {', '.join(missing)}")
    for suffix, info in parts.items():
        if info["dtype"] not in FLOAT_DTYPES:
            report.error("shapes", f"{module}{suffix}: dtype {info['dtype']} (expected F16, BF16 or F32)")
            return
    down, up, alpha = parts.get(DOWN), parts.get(UP), parts.get(ALPHA)
    rank = None
    if down and up:
        ds, us = down["shape"], up["shape"]
        if len(ds) not in (2, 4) or len(us) != len(ds):
            report.error("shapes", f"{module}: lora_down {ds} and lora_up {us} must both be 2-D (linear) or 4-D (conv)")
        elif ds[0] != us[1]:
            report.error("shapes", f"{module}: lora_down rank {ds[0]} does not match lora_up rank {us[1]}")
        elif len(us) == 4 and tuple(us[2:]) != (1, 1):
            report.error("shapes", f"{module}: conv lora_up must be 1x1, got {us[2]}x{us[3]}")
        else:
            rank = ds[0]
            report.ranks.append(rank)
    if alpha is not None:
        if list(alpha["shape"]) != []:
            report.error("alpha", f"{module}.alpha has shape {alpha['shape']}; it must be a 0-dim scalar")
        else:
            value = _read_array(fh, base, alpha)
            a = float(value) if value is not None else float("nan")
            if not math.isfinite(a) or a <= 0:
                report.error("alpha", f"{module}.alpha is {a}; it must be a positive number")
            else:
                report.alphas.append(a)
    for suffix, info in ((DOWN, down), (UP, up)):
        if info is None:
            continue
        bits = _read_bits(fh, base, info)
        if bits is None:
            report.error("shapes", f"{module}{suffix}: data size does not match shape {info['shape']}")
            continue
        raw, exponent = bits
        if bool(((raw & exponent) == exponent).any()):
            report.error("values", f"{module}{suffix} contains NaN or infinite values (training diverged)")
        elif suffix == UP and not bool((raw & raw.dtype.type(_MAGNITUDE[info["dtype"]])).any()):
            report.error("values", f"{module}: lora_up is all zeros, so the module has no effect (untrained?)")


# Bit masks of the IEEE formats: a value is NaN/inf when all exponent bits are set, and zero (either
# sign) when everything but the sign bit is clear. Integer tests on the raw bits are several times
# faster than float ops on a 100 MB file (numpy emulates f16).
_UINT = {"F16": "<u2", "BF16": "<u2", "F32": "<u4"}
_EXPONENT = {"F16": 0x7C00, "BF16": 0x7F80, "F32": 0x7F800000}
_MAGNITUDE = {"F16": 0x7FFF, "BF16": 0x7FFF, "F32": 0x7FFFFFFF}


def _read_bits(fh, base: int, info: dict):
    """(raw bits as unsigned ints, the exponent mask) of a float tensor, or None if the size is wrong."""
    # numpy only when tensor values are read: listing and header checks stay light.
    import numpy as np

    dtype = info["dtype"]
    start, end = (int(x) for x in info["data_offsets"])
    width = np.dtype(_UINT[dtype]).itemsize
    if end - start != math.prod(info["shape"]) * width:
        return None
    fh.seek(base + start)
    raw = np.frombuffer(fh.read(end - start), dtype=_UINT[dtype])
    return raw, raw.dtype.type(_EXPONENT[dtype])


def _check_metadata(report: Report, metadata: dict, *, kohya: bool) -> None:
    bad = [k for k, v in metadata.items() if not isinstance(v, str)]
    if bad:
        report.error("metadata", f"metadata values must be strings; not strings: {', '.join(map(str, bad[:5]))}")
    if not kohya:
        return
    missing = [k for k in REQUIRED_SS_KEYS if k not in metadata]
    if missing:
        report.warn("metadata", f"missing kohya metadata {', '.join(missing)} (front ends show less about it)")
    tf = metadata.get("ss_tag_frequency")
    if isinstance(tf, str):
        try:
            json.loads(tf)
        except json.JSONDecodeError:
            report.error("metadata", "ss_tag_frequency is not valid JSON (A1111's tag list breaks on it)")
    dim, alpha = metadata.get("ss_network_dim"), metadata.get("ss_network_alpha")
    if isinstance(dim, str) and report.ranks and dim.isdigit() and int(dim) != max(report.ranks):
        report.warn("metadata", f"ss_network_dim is {dim} but the weights have rank {_span(report.ranks)}")
    if isinstance(alpha, str) and report.alphas:
        try:
            if not any(math.isclose(float(alpha), a, rel_tol=1e-3) for a in report.alphas):
                report.warn("metadata", f"ss_network_alpha is {alpha} but the .alpha tensors are {_span(report.alphas)}")
        except ValueError:
            report.warn("metadata", f"ss_network_alpha {alpha!r} is not a number")


# ----------------------------------------------------------------------------------------- load check

def base_model_of(metadata: dict[str, str]) -> str | None:
    """The base model a file names in its metadata (loradeck's own key, else kohya's)."""
    return metadata.get("loradeck_base_model") or metadata.get("ss_sd_model_name") or None


def base_available(base: str) -> bool:
    """Whether `base` can be loaded without a download: synthetic, a local folder or file, or a hub id
    already in the local cache (loradeck.trainer.train.models decides what a name is)."""
    try:
        kind = kind_of(base)
    except LoradeckError:
        return False
    if kind != "hub":
        return True
    try:
        # Heavy-ish: only when a hub id is named.
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(base, "model_index.json")
    except Exception:  # noqa: BLE001 - an invalid id or a broken cache both mean "not available"
        return False
    return isinstance(found, str)


def _load_pipeline(base: str):
    """A diffusers pipeline of the base model (through loradeck.trainer.train.models, the one place that loads them)."""
    # Heavy: only for the load check.
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    model = load_base_model(base)
    if model.family == "sdxl":
        return StableDiffusionXLPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                         text_encoder_2=model.text_encoder_2, tokenizer_2=model.tokenizer_2,
                                         unet=model.unet, scheduler=model.noise_scheduler())
    return StableDiffusionPipeline(vae=model.vae, text_encoder=model.text_encoder, tokenizer=model.tokenizer,
                                   unet=model.unet, scheduler=model.noise_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)


def _lora_layer_names(model, adapter: str) -> set[str]:
    names = set()
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is not None and hasattr(lora_a, "keys") and adapter in lora_a.keys():
            names.add(name)
    return names


def _probe(pipe):
    """Outputs of the UNet and text encoder on fixed small inputs."""
    # Heavy: only for the load check.
    import torch

    g = torch.Generator().manual_seed(0)
    cfg = pipe.unet.config
    cross = cfg.cross_attention_dim if isinstance(cfg.cross_attention_dim, int) else cfg.cross_attention_dim[0]
    sample = torch.randn(1, cfg.in_channels, 8, 8, generator=g)
    hidden = torch.randn(1, 4, cross, generator=g)
    te_cfg = pipe.text_encoder.config
    ids = torch.tensor([[te_cfg.bos_token_id, 100, 200, 300, te_cfg.eos_token_id]]) % te_cfg.vocab_size
    extra = {}
    if getattr(cfg, "addition_embed_type", None) == "text_time":  # SDXL: pooled embedding + 6 time ids
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        extra = {"added_cond_kwargs": {"text_embeds": torch.randn(1, pooled, generator=g),
                                       "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}}
    with torch.no_grad():
        text = pipe.text_encoder(ids)[0]
        if getattr(pipe, "text_encoder_2", None) is not None:
            text = torch.cat([text.flatten(), pipe.text_encoder_2(ids)[0].flatten()])
        return pipe.unet(sample, torch.tensor([500]), hidden, **extra).sample, text


def _phase(phase: str, on_event: OnEvent | None, should_stop: ShouldStop | None) -> None:
    """Start `phase` of the load check: stop here if asked to, else report it."""
    if should_stop is not None and should_stop():
        raise children.Cancelled("the load check was cancelled")
    if on_event is not None:
        on_event(make_event("progress", task=TASK, done=LOAD_PHASES.index(phase), total=len(LOAD_PHASES),
                            message=phase))


def check_loads(path: str | os.PathLike, base_model: str, *, on_event: OnEvent | None = None,
                should_stop: ShouldStop | None = None) -> list[Problem]:
    """Load the file with diffusers' `load_lora_weights` on `base_model` (imports torch).

    Every module of the file must land on a layer of the model, and the adapter must change the
    UNet's (and, with text-encoder modules, the text encoder's) output. Returns the problems found.
    Each phase (LOAD_PHASES) is reported to `on_event` as it starts; between phases a true
    `should_stop()` raises children.Cancelled.
    """
    # Heavy: only for the load check.
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # diffusers' and transformers' own notes ("no LoRA keys for the text encoder", deprecations,
    # "CLIPImageProcessor requires torchvision") are noise here: what matters is measured below and
    # reported as problems.
    levels = diffusers_logging.get_verbosity(), transformers_logging.get_verbosity()
    bars = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()  # "Loading weights" bars
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _check_loads(path, base_model, on_event, should_stop)
    finally:
        for lib, level, bar in zip((diffusers_logging, transformers_logging), levels, bars):
            lib.set_verbosity(level)
            if bar:
                lib.enable_progress_bar()


def _check_loads(path: str | os.PathLike, base_model: str, on_event: OnEvent | None,
                 should_stop: ShouldStop | None) -> list[Problem]:
    # Heavy: only for the load check.
    import torch

    info, _ = read_header(path)
    file_modules = {split_kohya_key(k)[0] for k in info if split_kohya_key(k)}
    _phase("loading base model", on_event, should_stop)
    try:
        pipe = _load_pipeline(base_model)
    except Exception as e:  # noqa: BLE001 - any load failure is the user's model problem, reported as such
        return [Problem("load", f"cannot load base model {base_model}: {' '.join(str(e).split())[:200]}")]
    unet_before, te_before = _probe(pipe)
    _phase("loading adapter", on_event, should_stop)
    try:
        pipe.load_lora_weights(str(path), adapter_name="validate")
    except Exception as e:  # noqa: BLE001 - diffusers raises many types for bad files
        return [Problem("load", f"diffusers load_lora_weights failed: {' '.join(str(e).split())[:300]}")]
    _phase("probing", on_event, should_stop)
    te_name = lambda n: n if n.startswith("text_model.") else "text_model." + n  # noqa: E731
    if getattr(pipe, "text_encoder_2", None) is not None:  # SDXL: SGM UNet names, te1/te2
        loaded = {kohya_key(UNET_PREFIX, diffusers_to_sgm(n, pipe.unet.config))
                  for n in _lora_layer_names(pipe.unet, "validate")}
        for prefix, encoder in (("lora_te1", pipe.text_encoder), ("lora_te2", pipe.text_encoder_2)):
            loaded |= {prefix + kohya_key(TE_PREFIX, te_name(n))[len(TE_PREFIX):]
                       for n in _lora_layer_names(encoder, "validate")}
    else:
        loaded = {kohya_key(UNET_PREFIX, n) for n in _lora_layer_names(pipe.unet, "validate")}
        loaded |= {kohya_key(TE_PREFIX, te_name(n)) for n in _lora_layer_names(pipe.text_encoder, "validate")}
    problems = []
    unmatched = sorted(file_modules - loaded)
    if unmatched:
        problems.append(Problem("load", f"{len(unmatched)} module(s) match no layer of {base_model}"
                                        f" (e.g. {', '.join(unmatched[:3])}); front ends silently drop them"))
    unet_after, te_after = _probe(pipe)
    if torch.allclose(unet_before, unet_after) and torch.allclose(te_before, te_after):
        problems.append(Problem("load", "loaded, but the adapter does not change the model's output"))
    return problems


def _check_loads_isolated(path: str, base_model: str, *, on_event: OnEvent | None = None,
                          should_stop: ShouldStop | None = None) -> list[Problem]:
    """Run the load check in a child process (`python -m loradeck.trainer validate --events`): its
    events go to `on_event` as they come, its report arrives in the last one (task_finished)."""
    # Paths go to the child absolute, so its working folder never changes what they name.
    base = os.path.abspath(os.path.expanduser(base_model)) if os.path.exists(os.path.expanduser(base_model)) \
        else base_model
    argv = children.module_argv("loradeck.trainer", "validate", os.path.abspath(path), "--base", base, "--events")

    def forward(line: str) -> None:
        event = parse_line(line)
        if event is not None and on_event is not None:
            on_event(event)

    proc = children.run_watched(argv, on_line=forward if on_event is not None else None, should_stop=should_stop,
                                timeout=LOAD_CHECK_TIMEOUT_SECONDS, what="the load check")
    events = [e for e in map(parse_line, proc.stdout.splitlines()) if e is not None]
    finished = next((e for e in reversed(events) if e.get("type") == "task_finished" and e.get("task") == TASK), None)
    report = finished.get("report") if finished is not None else None
    if not isinstance(report, dict):
        tail = " ".join((proc.stderr or "").split())[-300:]
        return [Problem("load", f"the load check crashed: {tail or 'no output'}")]
    return [Problem(**p) for p in report.get("problems", []) if p.get("rule") == "load"]


def validate(path: str | os.PathLike, *, base_model: str | None = None, load_check: bool = True,
             isolate: bool = False, on_event: OnEvent | None = None,
             should_stop: ShouldStop | None = None) -> Report:
    """Rules, then (when the rules pass and a base model is available) the diffusers load check.

    `base_model` defaults to the one the file's metadata names; a model that is named explicitly but
    cannot be found is an error, one only named by the metadata is skipped with a note. The load
    check's progress goes to `on_event`; `should_stop` cancels it (children.Cancelled).
    """
    report = check_rules(path)
    if not load_check:
        report.load_check = "skipped: disabled"
        return report
    if not report.ok:
        report.load_check = "skipped: the rules failed"
        return report
    explicit = base_model is not None
    base = base_model or base_model_of(report.metadata)
    if not base:
        report.load_check = "skipped: no base model named (pass --base)"
        return report
    if not base_available(base):
        if explicit:
            report.error("load", f"base model {base} is not available locally")
            report.load_check = "failed"
        else:
            report.load_check = f"skipped: base model {base} is not available locally"
        return report
    if isolate:
        problems = _check_loads_isolated(str(path), base, on_event=on_event, should_stop=should_stop)
    else:
        problems = check_loads(path, base, on_event=on_event, should_stop=should_stop)
    report.problems.extend(problems)
    report.load_check = "failed" if problems else f"passed on {base}"
    return report
