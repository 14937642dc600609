"""project.toml: the project's human-editable settings, and the one schema for them.

    [project]  name, trigger_word, caption_extension, base_model, created, description
    [prep]     resolution, bucket_min_side, bucket_max_side, bucket_step, square_crop, background
    [caption]  how `loradeck caption` captions (the model)
    [train]    defaults for `loradeck train` (keys of loradeck.trainer.config.train_config.TrainConfig)
    [export]   destination for `loradeck export`
    [slurm]    how `loradeck train --slurm` submits runs (loradeck.trainer.config.slurm_settings; optional)
    [tagger]   WD14 tagger defaults for `loradeck caption --tagger wd14` (optional table)

The file is edited with tomlkit, so a user's comments, ordering and formatting survive our writes.
Unknown keys are refused with a message naming them (a typo is never silently ignored or dropped).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.exceptions import TOMLKitError

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.config import model_family, slurm_settings, train_config
from loradeck.trainer.errors import ConfigError, LoradeckError

# The [tagger] table's choices, owned here (the schema) and used by loradeck.trainer.captions.
DEFAULT_TAGGER = "SmilingWolf/wd-vit-tagger-v3"
TAG_ORDERS = ("character-first", "confidence")  # how a tagger's tags are ordered in a caption


@dataclass
class ProjectSection:
    name: str = ""
    trigger_word: str = ""
    caption_extension: str = ".txt"
    base_model: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    description: str = ""
    created: str = ""


@dataclass
class PrepSection:
    resolution: int = 512
    bucket_min_side: int = 256
    bucket_max_side: int = 1024
    bucket_step: int = 64
    square_crop: bool = False
    background: str = "#ffffff"  # alpha is flattened onto this colour


@dataclass
class CaptionSection:
    # "" = the built-in default (trainer.captions.blip_captioning.project_caption_model); else a Hugging Face id,
    # a local folder saved with save_pretrained, or synthetic:blip-tiny. `loradeck caption --model` wins.
    model: str = ""


@dataclass
class ExportSection:
    dest: str = ""
    on_conflict: str = "refuse"  # or "version": name-v2, name-v3, ...


@dataclass
class TaggerSection:
    """WD14 tagger settings (docs/captioning.md); the CLI flags override them per run."""

    model: str = DEFAULT_TAGGER
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    include_rating: bool = False
    replace_underscores: bool = True
    exclude: list = field(default_factory=list)   # tags never written (either spelling)
    order: str = "character-first"                 # or "confidence"


@dataclass
class Settings:
    project: ProjectSection = field(default_factory=ProjectSection)
    prep: PrepSection = field(default_factory=PrepSection)
    train: dict[str, Any] = field(default_factory=dict)  # validated by loradeck.trainer.config.train_config
    caption: CaptionSection = field(default_factory=CaptionSection)
    export: ExportSection = field(default_factory=ExportSection)
    slurm: dict[str, Any] = field(default_factory=dict)  # validated by loradeck.trainer.config.slurm_settings
    tagger: TaggerSection = field(default_factory=TaggerSection)

    @property
    def caption_extension(self) -> str:
        return self.project.caption_extension


_SECTIONS = {"project": ProjectSection, "prep": PrepSection, "caption": CaptionSection, "export": ExportSection,
             "tagger": TaggerSection}


def _check_section(path: Path, name: str, cls, table: dict) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) in [{name}]: {', '.join(unknown)}"
                          f" (known: {', '.join(known)})")
    values = {}
    for key, value in table.items():
        default = getattr(cls(), key)
        if isinstance(default, bool) != isinstance(value, bool) or not isinstance(value, type(default)):
            if not (isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool)):
                raise ConfigError(f"{path}: [{name}] {key} should be {type(default).__name__},"
                                  f" got {value!r}")
        values[key] = value
    return cls(**values)


def _validate(path: Path, doc: dict) -> Settings:
    unknown = sorted(set(doc) - {*_SECTIONS, "train", "slurm"})
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)}"
                          " (known: project, prep, caption, train, export, tagger, slurm)")
    out = Settings()
    for name, cls in _SECTIONS.items():
        table = doc.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [{name}] must be a table")
        setattr(out, name, _check_section(path, name, cls, table))
    ext = out.project.caption_extension
    if not ext.startswith(".") or len(ext) < 2 or "/" in ext:
        raise ConfigError(f"{path}: [project] caption_extension must look like '.txt', got {ext!r}")
    if out.prep.resolution < 8 or out.prep.bucket_step < 8 or out.prep.bucket_step % 8:
        raise ConfigError(f"{path}: [prep] resolution must be >= 8 and bucket_step a multiple of 8")
    if out.prep.bucket_min_side > out.prep.bucket_max_side:
        raise ConfigError(f"{path}: [prep] bucket_min_side is larger than bucket_max_side")
    if out.export.on_conflict not in ("refuse", "version"):
        raise ConfigError(f"{path}: [export] on_conflict must be 'refuse' or 'version'")
    _check_tagger(path, out.tagger)
    train = doc.get("train", {})
    if not isinstance(train, dict):
        raise ConfigError(f"{path}: [train] must be a table")
    train_config.apply(train_config.TrainConfig(), train, source=f"{path} [train]")
    out.train = dict(train)
    if "slurm" in doc:
        out.slurm = slurm_settings.validate(doc["slurm"], str(path))
    return out


def _check_tagger(path: Path, tagger: TaggerSection) -> None:
    for key in ("general_threshold", "character_threshold"):
        if not 0 <= getattr(tagger, key) <= 1:
            raise ConfigError(f"{path}: [tagger] {key} must be between 0 and 1")
    if not all(isinstance(t, str) for t in tagger.exclude):
        raise ConfigError(f"{path}: [tagger] exclude must be a list of tag strings")
    if tagger.order not in TAG_ORDERS:
        raise ConfigError(f"{path}: [tagger] order must be one of {', '.join(TAG_ORDERS)}")


def _read_doc(path: Path) -> tomlkit.TOMLDocument:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not utf-8 text") from None
    try:
        return tomlkit.parse(text)
    except TOMLKitError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def load(path: Path) -> Settings:
    """Read and validate a project.toml."""
    return _validate(path, _read_doc(path).unwrap())


# SDXL was trained at 1024 px: its projects prepare 1024-area buckets unless told otherwise.
SDXL_RESOLUTION = 1024


def default_resolution(base_model: Any) -> int | None:
    """The [prep] resolution a new project gets for `base_model` (None: the SD1 default)."""

    try:
        family = model_family.detect(base_model) if isinstance(base_model, str) else None
    except LoradeckError:  # an unsupported model is refused when a run is resolved, not here
        return None
    return SDXL_RESOLUTION if family == model_family.SDXL else None


def write_new(path: Path, *, name: str, **project_values: Any) -> Settings:
    """Write a fresh, commented project.toml. Keyword args go to [project]."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment("loradeck project settings. Edit freely; see docs/configuration.md."))
    proj = tomlkit.table()
    values = {"name": name, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    values.update({k: v for k, v in project_values.items() if v is not None})
    for f in fields(ProjectSection):
        proj.add(f.name, values.get(f.name, getattr(ProjectSection(), f.name)))
    doc.add("project", proj)
    prep = tomlkit.table()
    prep_values = {f.name: getattr(PrepSection(), f.name) for f in fields(PrepSection)}
    if default_resolution(values.get("base_model")):
        prep_values["resolution"] = default_resolution(values.get("base_model"))
    for key, value in prep_values.items():
        prep.add(key, value)
    doc.add("prep", prep)
    train = tomlkit.table()
    train.add(tomlkit.comment("defaults for `loradeck train`, e.g. rank = 16, mixed_precision = \"bf16\""))
    doc.add("train", train)
    caption = tomlkit.table()
    caption.add(tomlkit.comment("model: empty = BLIP large (synthetic:blip-tiny for synthetic projects);"
                                " or a Hugging Face id, or a local folder"))
    for f in fields(CaptionSection):
        caption.add(f.name, getattr(CaptionSection(), f.name))
    doc.add("caption", caption)
    export = tomlkit.table()
    for f in fields(ExportSection):
        export.add(f.name, getattr(ExportSection(), f.name))
    doc.add("export", export)
    _validate(path, doc.unwrap())
    atomic_write_text(path, tomlkit.dumps(doc))
    return load(path)


def update(path: Path, section: str, values: dict[str, Any]) -> Settings:
    """Set keys in one table, keeping everything else in the file (comments included) as it was."""
    doc = _read_doc(path)
    table = doc.get(section)
    if table is None:
        table = tomlkit.table()
        doc.add(section, table)
    for key, value in values.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    _validate(path, doc.unwrap())  # refuse to write something we could not read back
    atomic_write_text(path, tomlkit.dumps(doc))
    return load(path)
