"""The team's shared folder as a place: what is published there, its sidecars, and importing back.

Layout of a published adapter NAME (what A1111, ComfyUI and diffusers users pick up):

    NAME.safetensors     the kohya-format LoRA (loradeck.trainer.lora.file_format)
    NAME.json            sidecar: A1111's user-metadata keys ("activation text", "sd version",
                         "preferred weight", "description", "notes") plus a "loradeck" object
                         derived from the adapter's own ss_* header metadata (docs/publishing.md)
    NAME.preview.png     the run's latest sample, where there was one (A1111/ComfyUI preview name)
    PACK.pack.json       a pack of adapters with weights (loradeck.trainer.lora.packs)

Names are ASCII letters, digits, ".", "_", "-" and spaces (`name_problem`); a taken name may be
versioned NAME-v2, NAME-v3, ... (`candidate_names`). Published files are group-readable
(`publish_mode`). Files starting with "." (in-progress temporaries) are never listed. Pure Python:
the TUI lists the folder from a worker thread without torch.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import pwd
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from loradeck.trainer.atomic import atomic_write_text, current_umask
from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.config import train_config
from loradeck.trainer.config.train_config import FIELD_NAMES
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.lora.file_format import LoraFileError, read_header

ADAPTER_SUFFIX = ".safetensors"
SIDECAR_SUFFIX = ".json"
PREVIEW_SUFFIX = ".preview.png"
PACK_SUFFIX = ".pack.json"
SIDECAR_SCHEMA = 1
TOP_TAGS = 20
MAX_VERSION = 999
_VERSION_RE = re.compile(r"^(?P<base>.+)-v(?P<n>\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,99}$")

# TrainConfig field <- kohya ss_* key, for files without loradeck's own config (trained elsewhere).
_SS_TO_TRAIN = {
    "rank": ("ss_network_dim", int), "alpha": ("ss_network_alpha", float),
    "learning_rate": ("ss_learning_rate", float), "lr_scheduler": ("ss_lr_scheduler", str),
    "lr_warmup_steps": ("ss_lr_warmup_steps", int), "seed": ("ss_seed", int),
    "noise_offset": ("ss_noise_offset", float), "min_snr_gamma": ("ss_min_snr_gamma", float),
    "mixed_precision": ("ss_mixed_precision", str), "keep_tokens": ("ss_keep_tokens", int),
    "caption_dropout_rate": ("ss_caption_dropout_rate", float),
    "gradient_accumulation_steps": ("ss_gradient_accumulation_steps", int),
    "max_train_steps": ("ss_max_train_steps", int), "max_train_epochs": ("ss_num_epochs", int),
}
# Training settings the sidecar repeats from the header (sidecar key <- ss_* key).
_TRAINING_KEYS = ("learning_rate", "unet_lr", "text_encoder_lr", "lr_scheduler", "lr_warmup_steps", "optimizer",
                  "mixed_precision", "seed", "noise_offset", "min_snr_gamma", "batch_size_per_device",
                  "gradient_accumulation_steps", "caption_dropout_rate", "keep_tokens", "shuffle_caption",
                  "network_module", "network_args", "max_train_steps")


class SharedFolderError(LoradeckError):
    """A shared folder or published adapter that cannot be read."""


def adapter_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{ADAPTER_SUFFIX}"


def sidecar_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{SIDECAR_SUFFIX}"


def preview_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{PREVIEW_SUFFIX}"


def pack_path(folder: Path, name: str) -> Path:
    return folder / f"{name}{PACK_SUFFIX}"


# ------------------------------------------------------------------------------ names and modes

def name_problem(name: str) -> str | None:
    """Why `name` cannot name a published adapter or pack, or None; each caller raises its own error."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name.endswith((".", " ")):
        return (f"adapter name {name!r} is not allowed: use ASCII letters, digits, '.', '_', '-' or"
                " spaces, starting with a letter or digit")
    if name.endswith(ADAPTER_SUFFIX):
        return f"give the adapter name without {ADAPTER_SUFFIX}"
    return None


def candidate_names(name: str, on_conflict: str):
    """The names to try in order: NAME, then NAME-v2, NAME-v3, ... when versioning."""
    yield name
    if on_conflict != "version":
        return
    m = _VERSION_RE.match(name)
    base, start = (m["base"], int(m["n"]) + 1) if m else (name, 2)
    for n in range(start, MAX_VERSION + 1):
        yield f"{base}-v{n}"


def publish_mode() -> int:
    """File mode for published files: the user's umask, but always readable by owner and group."""
    return (0o666 & ~current_umask()) | 0o440


# ------------------------------------------------------------------------------ metadata -> sidecar

def _value(text: str | None) -> Any:
    """An ss_* string as the JSON value it stands for ("16" -> 16, "None" -> None, "True" -> true)."""
    if text is None or text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    if text[:1] in "{[":
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def resolution_of(metadata: dict[str, str]) -> int | None:
    """512 from kohya's "(512, 512)" (or "512")."""
    raw = metadata.get("ss_resolution", "")
    digits = [int(p) for p in raw.strip("()[] ").replace(" ", "").split(",") if p.isdigit()]
    return max(digits) if digits else None


def top_tags(metadata: dict[str, str], n: int = TOP_TAGS) -> list[dict[str, Any]]:
    """The most frequent caption tags from ss_tag_frequency, summed over its dataset folders."""
    try:
        freq = json.loads(metadata.get("ss_tag_frequency") or "{}")
    except json.JSONDecodeError:
        return []
    counts: Counter[str] = Counter()
    if isinstance(freq, dict):
        for tags in freq.values():
            if isinstance(tags, dict):
                counts.update({str(t): int(c) for t, c in tags.items() if isinstance(c, (int, float))})
    return [{"tag": t, "count": c} for t, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def trigger_words(metadata: dict[str, str]) -> list[str]:
    raw = metadata.get("loradeck_trigger") or metadata.get("modelspec.trigger_phrase") or ""
    return [w.strip() for w in raw.split(",") if w.strip()]


def sd_version(base_model_version: str | None) -> str:
    """A1111's "sd version" value for kohya's ss_base_model_version."""
    v = base_model_version or ""
    if v.startswith("sdxl"):
        return "SDXL"
    if v.startswith("sd_v2"):
        return "SD2"
    if v.startswith("sd_v1"):
        return "SD1"
    return "Unknown"


def build_sidecar(metadata: dict[str, str], *, name: str, size: int, sha256: str, created: str, who: str,
                  preview: str | None, project: str | None = None, run: str | None = None,
                  description: str = "") -> dict[str, Any]:
    """The sidecar JSON of a published adapter, derived from its header `metadata` (so they agree)."""
    triggers = trigger_words(metadata)
    version = metadata.get("ss_base_model_version")
    info = {
        "schema": SIDECAR_SCHEMA,
        "name": name,
        "file": name + ADAPTER_SUFFIX,
        "preview": preview,
        "base_model": metadata.get("loradeck_base_model") or metadata.get("ss_sd_model_name"),
        "base_model_version": version,
        "trigger_words": triggers,
        "top_tags": top_tags(metadata),
        "resolution": resolution_of(metadata),
        "rank": _value(metadata.get("ss_network_dim")),
        "alpha": _value(metadata.get("ss_network_alpha")),
        "steps": _value(metadata.get("ss_steps") or metadata.get("ss_max_train_steps")),
        "epochs": _value(metadata.get("ss_num_epochs")),
        "dataset_size": _value(metadata.get("ss_num_train_images")),
        "training": {k: _value(metadata["ss_" + k]) for k in _TRAINING_KEYS if "ss_" + k in metadata},
        "sshs_model_hash": metadata.get("sshs_model_hash"),
        "sshs_legacy_hash": metadata.get("sshs_legacy_hash"),
        "sha256": sha256,
        "size": size,
        "created": created,
        "published_by": who,
        "project": project,
        "run": run,
    }
    notes = f"Published by {who} with loradeck" + (f" from project {project}" if project else "") + (
        f", run {run}" if run else "") + "."
    return {
        "description": description,
        "sd version": sd_version(version),
        "activation text": ", ".join(triggers),
        "preferred weight": 0,
        "negative text": "",
        "notes": notes,
        "loradeck": info,
    }


def read_sidecar(path: Path) -> dict[str, Any] | None:
    """A sidecar's JSON, or None when it is missing or unreadable (listing goes on without it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------------------------------- listing

@dataclass
class SharedAdapter:
    name: str
    file: str
    base_model: str | None
    base_model_version: str | None
    trigger: str
    size: int
    date: str          # ISO time it was published (sidecar), else the file's modification time
    who: str
    rank: Any
    sshs_model_hash: str | None
    preview: str | None
    has_sidecar: bool
    problem: str | None = None  # why the adapter's header could not be read

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _owner(st: os.stat_result) -> str:
    try:
        return pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        return str(st.st_uid)


def describe_adapter(folder: Path, name: str) -> SharedAdapter:
    """What the shared folder knows about adapter `name`: its sidecar, else its header."""
    path = adapter_path(folder, name)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SharedFolderError(f"no adapter {name!r} in {folder}",
                                hint=f"list them with: {command('shared', 'list', '--dir', folder)}") from None
    sidecar = read_sidecar(sidecar_path(folder, name))
    info = (sidecar or {}).get("loradeck") if isinstance((sidecar or {}).get("loradeck"), dict) else None
    problem = None
    metadata: dict[str, str] = {}
    if info is None:
        try:
            _, metadata = read_header(path)
        except LoraFileError as e:
            problem = str(e)
    preview = preview_path(folder, name)
    mtime = _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc).isoformat(timespec="seconds")
    if info is not None:
        return SharedAdapter(
            name=name, file=path.name, base_model=info.get("base_model"),
            base_model_version=info.get("base_model_version"),
            trigger=", ".join(info.get("trigger_words") or []), size=st.st_size, date=info.get("created") or mtime,
            who=info.get("published_by") or _owner(st), rank=info.get("rank"),
            sshs_model_hash=info.get("sshs_model_hash"), preview=preview.name if preview.is_file() else None,
            has_sidecar=True)
    return SharedAdapter(
        name=name, file=path.name, base_model=metadata.get("loradeck_base_model") or metadata.get("ss_sd_model_name"),
        base_model_version=metadata.get("ss_base_model_version"), trigger=", ".join(trigger_words(metadata)),
        size=st.st_size, date=mtime, who=_owner(st), rank=_value(metadata.get("ss_network_dim")),
        sshs_model_hash=metadata.get("sshs_model_hash"), preview=preview.name if preview.is_file() else None,
        has_sidecar=sidecar is not None, problem=problem)


def list_adapters(folder: str | os.PathLike) -> list[SharedAdapter]:
    """Every adapter published in `folder`, newest first."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SharedFolderError(f"shared folder {folder} does not exist or is not a folder")
    names = [p.name[: -len(ADAPTER_SUFFIX)] for p in folder.iterdir()
             if p.name.endswith(ADAPTER_SUFFIX) and not p.name.startswith(".") and p.is_file()]
    items = [describe_adapter(folder, n) for n in names]
    return sorted(items, key=lambda a: (a.date, a.name), reverse=True)


# ---------------------------------------------------------------------------------------- import

def adapter_metadata(folder: Path, name: str) -> dict[str, str]:
    """The header metadata of published adapter `name`."""
    path = adapter_path(folder, name)
    if not path.is_file():
        raise SharedFolderError(f"no adapter {name!r} in {folder}")
    _, metadata = read_header(path)
    return {str(k): v for k, v in metadata.items() if isinstance(v, str)}


def train_settings_of(metadata: dict[str, str]) -> dict[str, Any]:
    """TrainConfig values an adapter was trained with: loradeck's full config, else kohya's ss_* keys."""
    raw = metadata.get("loradeck_config")
    if raw:
        try:
            cfg = json.loads(raw)
        except json.JSONDecodeError:
            cfg = None
        if isinstance(cfg, dict):
            return {k: v for k, v in cfg.items() if k in FIELD_NAMES and v is not None}
    out: dict[str, Any] = {}
    for key, (ss_key, kind) in _SS_TO_TRAIN.items():
        text = metadata.get(ss_key)
        if text in (None, "", "None"):
            continue
        try:
            out[key] = kind(float(text)) if kind is int else kind(text)
        except ValueError:
            continue
    res = resolution_of(metadata)
    if res:
        out["resolution"] = res
    if metadata.get("ss_sd_model_name"):
        out["base_model"] = metadata["ss_sd_model_name"]
    return out


def import_into_project(project, folder: str | os.PathLike, name: str, *, dry_run: bool = False) -> dict[str, Any]:
    """Bring a published adapter's settings back into `project` (a loradeck.trainer.dataset.project.Project).

    Sets [train] defaults to the settings the adapter was trained with (only those that differ from
    the defaults), and the project's trigger word and base model where the project has none of its own.
    A copy of the adapter's sidecar (or header metadata) is kept in <project>/.loradeck/imports/.
    Returns {"train": {...}, "project": {...}, "record": path}; `dry_run` changes nothing.
    """
    folder = Path(folder)
    metadata = adapter_metadata(folder, name)
    settings = settings_mod.load(project.settings_file)
    wanted = train_settings_of(metadata)
    defaults = train_config.TrainConfig().to_dict()
    config_base = wanted.pop("base_model", None)
    base_model = metadata.get("loradeck_base_model") or metadata.get("ss_sd_model_name") or config_base
    train = {k: v for k, v in wanted.items() if k != "output_name" and defaults.get(k) != v}
    try:
        train_config.from_mapping({**settings.train, **train}, source=f"adapter {name}")
    except LoradeckError as e:
        raise SharedFolderError(f"the settings of {name} do not make a valid config: {e}") from None
    proj: dict[str, Any] = {}
    triggers = trigger_words(metadata)
    if triggers and not settings.project.trigger_word:
        proj["trigger_word"] = triggers[0]
    default_base = settings_mod.ProjectSection().base_model
    if base_model and settings.project.base_model in ("", default_base) and base_model != settings.project.base_model:
        proj["base_model"] = base_model
    record = project.state / "imports" / f"{name}.json"
    result = {"adapter": name, "from": str(folder), "train": train, "project": proj, "record": str(record),
              "dry_run": dry_run}
    if dry_run:
        return result
    if train:
        settings_mod.update(project.settings_file, "train", train)
    if proj:
        settings_mod.update(project.settings_file, "project", proj)
    record.parent.mkdir(parents=True, exist_ok=True)
    sidecar = read_sidecar(sidecar_path(folder, name))
    atomic_write_text(record, json.dumps({"imported": now_iso(), "from": str(adapter_path(folder, name)),
                                          "sidecar": sidecar, "metadata": metadata}, indent=2, ensure_ascii=False))
    return result
