"""Packs: several published adapters with default weights, for front ends that mix them.

A pack is `NAME.pack.json` in the shared folder beside the adapters it lists (docs/publishing.md):

    {"loradeck_pack": 1, "name": "...", "description": "...", "base_model": "...",
     "base_model_version": "sd_v1", "preview": "NAME.pack.png" | "<adapter>.preview.png" | null,
     "activation_text": "trigger1, trigger2", "created": "...", "created_by": "...",
     "adapters": [{"name": "a", "file": "a.safetensors", "weight": 0.8,
                   "sshs_model_hash": "...", "trigger_words": ["..."]}, ...]}

`apply_pack` loads a pack into a diffusers pipeline (`load_lora_weights` + `set_adapters` with the
weights). Writing, reading and listing are pure Python. A pack is written like a published adapter:
staged in full, then given its name only if that name is free (loradeck.trainer.atomic).
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

from loradeck.trainer.atomic import StagedFile, link_no_clobber
from loradeck.trainer.config.user_config import load_user_config
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.lora.file_format import LoraFileError, file_model_hash, read_header
from loradeck.trainer.lora.shared_folder import (
    ADAPTER_SUFFIX,
    PACK_SUFFIX,
    adapter_path,
    candidate_names,
    name_problem,
    now_iso,
    pack_path,
    preview_path,
    publish_mode,
    trigger_words,
)

PACK_SCHEMA = 1
# Adapter weights a pack accepts: front ends mix LoRAs at about 0.3-1.2, negative ones subtract a
# concept; anything past ±2 is a typo (lora=1e9), not a setting.
MIN_WEIGHT, MAX_WEIGHT = -2.0, 2.0
PACK_PREVIEW_SUFFIX = ".pack.png"


class PackError(LoradeckError):
    """A pack that cannot be written, read or applied."""


def parse_adapter_spec(spec: str) -> tuple[str, float]:
    """"name" -> (name, 1.0); "name=0.7" or "name:0.7" -> (name, 0.7)."""
    for sep in ("=", ":"):
        if sep in spec:
            name, _, raw = spec.rpartition(sep)
            try:
                weight = float(raw)
            except ValueError:
                raise PackError(f"{spec!r}: weight {raw!r} is not a number") from None
            break
    else:
        name, weight = spec, 1.0
    name = name.strip()
    if name.endswith(ADAPTER_SUFFIX):
        name = name[: -len(ADAPTER_SUFFIX)]
    if not name:
        raise PackError(f"{spec!r}: no adapter name")
    check_weight(weight, what=repr(spec))
    return name, weight


def check_weight(weight: float, *, what: str) -> float:
    """`weight` if it is a sane adapter weight (MIN_WEIGHT..MAX_WEIGHT), else PackError saying the bounds."""
    if not math.isfinite(weight):
        raise PackError(f"{what}: weight must be a finite number")
    if not MIN_WEIGHT <= weight <= MAX_WEIGHT:
        raise PackError(f"{what}: weight {weight:g} is outside {MIN_WEIGHT:g} to {MAX_WEIGHT:g}",
                        hint="LoRA weights are usually 0.3 to 1.2; past ±2 the images break down")
    return weight


def create_pack(folder: str | os.PathLike, name: str, adapters: list[tuple[str, float]], *,
                description: str = "", preview: str | os.PathLike | None = None, on_conflict: str = "refuse",
                who: str | None = None) -> dict[str, Any]:
    """Write NAME.pack.json in `folder` listing `adapters` [(adapter name, weight)], all published there.

    The preview is `preview` (copied as NAME.pack.png), else the first adapter's preview. Adapters must
    share one base model version. Returns {"path", "pack"}.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise PackError(f"shared folder {folder} does not exist")
    problem = name_problem(name)
    if problem:
        raise PackError(problem)
    if not adapters:
        raise PackError("a pack needs at least one adapter")
    names = [a for a, _ in adapters]
    if len(set(names)) != len(names):
        raise PackError("an adapter is listed twice")
    entries, versions, bases = [], set(), set()
    for adapter, weight in adapters:
        check_weight(float(weight), what=f"adapter {adapter!r}")
        path = adapter_path(folder, adapter)
        if not path.is_file():
            raise PackError(f"no adapter {adapter!r} in {folder}", hint="publish it first with loradeck export")
        try:
            _, meta = read_header(path)
        except LoraFileError as e:
            raise PackError(f"{adapter}: {e}") from None
        versions.add(meta.get("ss_base_model_version") or "unknown")
        bases.add(meta.get("loradeck_base_model") or meta.get("ss_sd_model_name") or "")
        entries.append({"name": adapter, "file": path.name, "weight": float(weight),
                        "sshs_model_hash": meta.get("sshs_model_hash") or file_model_hash(path),
                        "trigger_words": trigger_words(meta)})
    known = versions - {"unknown"}
    families = {"SDXL" if v.startswith("sdxl") else "SD 1.x" if v.startswith("sd_v1") else v for v in known}
    if {"SDXL", "SD 1.x"} <= families:
        raise PackError(f"a pack cannot mix SD 1.x and SDXL adapters ({', '.join(sorted(known))}): they load on "
                        "different base models", hint="make one pack per base model family")
    if len(known) > 1:
        raise PackError(f"the adapters are for different base models ({', '.join(sorted(known))}); a pack mixes"
                        " adapters of one base model")
    first_preview = next((preview_path(folder, a).name for a in names if preview_path(folder, a).is_file()), None)
    preview_bytes = Path(preview).read_bytes() if preview is not None else None
    triggers = [w for e in entries for w in e["trigger_words"]]
    mode = publish_mode()
    for final in candidate_names(name, on_conflict):
        target = pack_path(folder, final)
        doc = {
            "loradeck_pack": PACK_SCHEMA, "name": final, "description": description,
            "base_model": next(iter(bases)) if len(bases) == 1 else None,
            "base_model_version": next(iter(known)) if known else None,
            "preview": final + PACK_PREVIEW_SUFFIX if preview_bytes is not None else first_preview,
            "activation_text": ", ".join(dict.fromkeys(triggers)),
            "created": now_iso(), "created_by": who or load_user_config().who,
            "adapters": entries,
        }
        text = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        temps = [StagedFile(folder)]
        try:
            temps[0].write(lambda fh: fh.write(text), mode)
            if preview_bytes is not None:
                temps.append(StagedFile(folder))
                temps[1].write(lambda fh: fh.write(preview_bytes), mode)
            if link_no_clobber(temps[0].path, target):
                temps[0].placed = True
                if preview_bytes is not None:
                    os.replace(temps[1].path, folder / (final + PACK_PREVIEW_SUFFIX))
                    temps[1].placed = True
                return {"path": str(target), "pack": doc}
        except OSError as e:
            raise PackError(f"cannot write pack {final}: {e.strerror or e}; nothing was written") from None
        finally:
            for t in temps:
                t.discard()
        if on_conflict == "refuse":
            raise PackError(f"{target} already exists", hint="choose another name, or --on-conflict version")
    raise PackError(f"{name}: no free version name")


def read_pack(path: str | os.PathLike) -> dict[str, Any]:
    """A pack's JSON, checked: the adapters it lists exist beside it and still have the listed hashes."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PackError(f"no pack {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackError(f"{path.name}: not a readable pack ({e})") from None
    if not isinstance(doc, dict) or doc.get("loradeck_pack") != PACK_SCHEMA or not isinstance(doc.get("adapters"), list):
        raise PackError(f"{path.name}: not a loradeck pack (schema {PACK_SCHEMA})")
    for entry in doc["adapters"]:
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str)
                and isinstance(entry.get("weight"), (int, float))):
            raise PackError(f"{path.name}: malformed adapter entry {entry!r}")
        file = path.parent / entry["file"]
        if Path(entry["file"]).name != entry["file"] or not file.is_file():
            raise PackError(f"{path.name}: adapter {entry['file']} is missing from {path.parent}")
        _, meta = read_header(file)
        if entry.get("sshs_model_hash") and meta.get("sshs_model_hash") != entry["sshs_model_hash"]:
            raise PackError(f"{path.name}: {entry['file']} changed since the pack was made (hash differs)")
    return doc


def list_packs(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The packs in `folder` (name, description, adapters with weights), newest first."""
    folder = Path(folder)
    out = []
    for p in sorted(folder.glob("*" + PACK_SUFFIX)):
        if p.name.startswith("."):
            continue
        try:
            pack = read_pack(p)
        except LoradeckError as e:
            out.append({"name": p.name[: -len(PACK_SUFFIX)], "problem": str(e)})
            continue
        out.append({"name": pack["name"], "description": pack.get("description", ""),
                    "adapters": [(a["name"], a["weight"]) for a in pack["adapters"]],
                    "created": pack.get("created"), "created_by": pack.get("created_by")})
    return sorted(out, key=lambda d: (d.get("created") or "", d["name"]), reverse=True)


def resolve_pack(folder: str | os.PathLike, name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".json" and p.is_file():
        return p
    return pack_path(Path(folder), name_or_path.removesuffix(PACK_SUFFIX))


def apply_pack(pipe, pack: str | os.PathLike) -> list[tuple[str, float]]:
    """Load every adapter of `pack` into the diffusers `pipe` and activate them with the pack's weights
    (`set_adapters`). Returns [(adapter name, weight)]. Imports nothing heavy itself: `pipe` brings it."""
    path = Path(pack)
    doc = read_pack(path)
    loaded = []
    with warnings.catch_warnings():
        # peft warns when a model gets a second adapter; several adapters is the point of a pack.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        for entry in doc["adapters"]:
            # peft adapter names become module keys: keep them to letters, digits and "_".
            adapter = re.sub(r"\W", "_", entry.get("name") or entry["file"].removesuffix(ADAPTER_SUFFIX))
            pipe.load_lora_weights(str(path.parent / entry["file"]), adapter_name=adapter)
            loaded.append((adapter, float(entry["weight"])))
    pipe.set_adapters([a for a, _ in loaded], adapter_weights=[w for _, w in loaded])
    return loaded
