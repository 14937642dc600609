"""Resolving a run's config: layers of settings folded into one TrainConfig, written into the run.

Resolution order (later wins):

    TrainConfig defaults < project.toml [project] base_model < project.toml [train]
        < --config FILE (a loradeck TOML, or a kohya train_network.py TOML) < command-line flags

The resolved config goes to runs/<id>/config.toml: the TrainConfig fields as top-level keys plus a
`[dataset]` table (project_dir, caption_extension, trigger_word) so the run needs nothing else.
Pure Python (no torch): the CLI and the TUI's training form import it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import tomlkit
from tomlkit.exceptions import TOMLKitError

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.config import kohya as kohya_config
from loradeck.trainer.config import model_family, train_config
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.dataset.repeat_folders import image_repeats
from loradeck.trainer.errors import ConfigError

DATASET_TABLE = "dataset"
DATASET_KEYS = ("project_dir", "caption_extension", "trigger_word")

# What each TrainConfig field means: the CLI's --help and docs/configuration.md say the same.
FIELD_HELP: dict[str, str] = {
    "base_model": "HF id, local diffusers folder, single-file .safetensors, or synthetic:tiny / synthetic:sd15 / "
                  "synthetic:sdxl-tiny / synthetic:sdxl (SD 1.x or SDXL)",
    "output_name": "file name (no extension) of the final LoRA, <output_name>.safetensors in the run folder",
    "prediction_type": "auto (from the model's scheduler), epsilon or v_prediction",
    "max_train_steps": "optimizer steps to train; wins over max_train_epochs",
    "max_train_epochs": "epochs to train when max_train_steps is not set",
    "repeats": "times each image is seen per epoch",
    "batch_size": "images per step (per GPU)",
    "gradient_accumulation_steps": "batches accumulated into one optimizer step",
    "rank": "LoRA rank (network_dim)",
    "alpha": "LoRA alpha; the update is scaled by alpha/rank",
    "target_modules": "attention (q/k/v/out) or kohya (attention + feed-forward + proj_in/proj_out)",
    "train_text_encoder": "also train a LoRA on the text encoder",
    "optimizer": "adamw or adamw8bit (bitsandbytes, CUDA only)",
    "learning_rate": "learning rate (UNet LoRA)",
    "text_encoder_lr": "learning rate of the text-encoder LoRA (default: learning_rate)",
    "lr_scheduler": "constant, constant_with_warmup, linear, cosine, cosine_with_restarts or polynomial",
    "lr_warmup_steps": "steps of linear warmup",
    "weight_decay": "AdamW weight decay",
    "max_grad_norm": "gradient clipping norm (0 disables)",
    "resolution": "training resolution in pixels (the bucket area target; a multiple of 8)",
    "shuffle_caption": "shuffle the comma-separated caption tags every step",
    "keep_tokens": "leading caption tags kept in place when shuffling",
    "caption_dropout_rate": "probability that an image's caption is dropped (trained with an empty prompt)",
    "noise_offset": "noise offset (0 disables; 0.05-0.1 helps very dark/bright images)",
    "min_snr_gamma": "min-SNR loss weighting gamma (0 disables; 5 is common)",
    "seed": "random seed (weights init, noise, shuffling)",
    "mixed_precision": "no, fp16 or bf16 (LoRA weights stay fp32)",
    "attention": "sdpa (default), xformers (when installed) or eager",
    "gradient_checkpointing": "recompute activations in the backward pass: much less memory, ~20-30% slower",
    "cache_latents": "encode the images with the VAE once instead of every step (its encoder is then freed)",
    "cache_latents_to_disk": "keep cached latents on disk, keyed by image content and resolution",
    "cache_text_embeddings": "encode the captions once (not with train_text_encoder, shuffle or dropout)",
    "vae_fp32": "keep the VAE in fp32 (avoids the fp16 VAE NaN problem)",
    "sample_prompts": "prompts rendered into samples/ during training",
    "sample_every_steps": "render samples every N steps (0: never)",
    "sample_every_epochs": "render samples every N epochs (0: never)",
    "sample_steps": "denoising steps per sample image",
    "sample_guidance": "classifier-free guidance scale of the samples",
    "save_every_steps": "save a checkpoint (state + kohya LoRA) every N steps (0: never)",
    "save_every_epochs": "save a checkpoint every N epochs (0: never)",
    "save_last_n": "checkpoints kept (older ones are deleted)",
    "save_precision": "dtype of saved LoRA files: fp16, bf16 or fp32",
    "gpus": "number of GPUs; more than 1 launches through accelerate",
}


@dataclass
class ConfigLayer:
    """The values one source sets (only the keys it names), with notes for the user."""

    source: str
    values: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    kind: str = "loradeck"  # or "kohya"


@dataclass
class ResolvedConfig:
    config: TrainConfig
    dataset: dict[str, Any]
    sources: dict[str, str]          # field -> the layer that set it ("default" when none did)
    notes: list[str] = field(default_factory=list)
    family: str | None = None        # trainer.config.model_family (None: unknown offline; a run reads it from the hub)


def _limit_rule(values: dict[str, Any], layer: Mapping[str, Any]) -> None:
    """A layer that names only one of the two limits makes it THE limit, clearing the other, so a
    lower layer's max_train_steps never silently wins over a higher layer's epochs."""
    steps, epochs = "max_train_steps" in layer, "max_train_epochs" in layer
    if epochs and not steps:
        values["max_train_steps"] = None
    elif steps and not epochs:
        values["max_train_epochs"] = None


def absolute_model(base_model: str, relative_to: Path | None = None, *, folder_first: bool = False) -> str:
    """A base model that names an existing local path is stored absolute (runs start in their own dir).

    A relative path is looked up in the current folder, then in `relative_to` (the folder of the file
    that names it); `folder_first` reverses that (project.toml: the project folder first).
    """
    if not base_model or not isinstance(base_model, str) or base_model.startswith("synthetic:"):
        return base_model
    bases = (relative_to, Path.cwd()) if folder_first else (Path.cwd(), relative_to)
    for base in bases:
        if base is None:
            continue
        candidate = (base / Path(base_model).expanduser())
        if candidate.exists():
            return str(candidate.resolve())
    return base_model


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder, not a TOML file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a utf-8 text file") from None
    except OSError as e:  # permission denied, I/O error
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        return tomlkit.parse(text).unwrap()
    except TOMLKitError as e:
        raise ConfigError(f"config file {path}: not valid TOML: {e}") from None


def load_config_file(path: str | os.PathLike) -> ConfigLayer:
    """Read a `--config FILE`: a loradeck TOML (TrainConfig keys at the top level or in [train];
    a run's own config.toml works too) or a kohya train_network.py TOML, detected by its tables."""
    path = Path(path).expanduser()
    doc = read_toml(path)
    source = f"--config {path}"
    if kohya_config.looks_like_kohya(doc):
        values, notes = kohya_config.map_kohya(doc, base_dir=path.parent, source=source)
        if "base_model" in values:
            values["base_model"] = absolute_model(values["base_model"], path.parent)
        return ConfigLayer(source, values, notes, kind="kohya")
    values, notes = {}, []
    for key, value in doc.items():
        if key == "train" and isinstance(value, dict):
            values.update(value)
        elif key == DATASET_TABLE and isinstance(value, dict):
            notes.append(f"{source}: [dataset] ignored (a run trains the project it is started in)")
        else:
            values[key] = value
    train_config.apply(TrainConfig(), values, source=source)  # refuses unknown keys, by name
    if "base_model" in values and isinstance(values["base_model"], str):
        values["base_model"] = absolute_model(values["base_model"], path.parent)
    return ConfigLayer(source, values, notes)


def project_layers(project: Project) -> tuple[list[ConfigLayer], settings_mod.Settings]:
    """The project's layers: its [project] base_model and [prep] resolution (the dataset is prepared
    for it), then its [train] defaults."""
    s = settings_mod.load(project.settings_file)
    base_model = absolute_model(s.project.base_model, project.path, folder_first=True)
    layers = [ConfigLayer("project.toml [project] base_model", {"base_model": base_model}),
              ConfigLayer("project.toml [prep] resolution", {"resolution": s.prep.resolution})]
    if s.train:
        train = dict(s.train)
        if "base_model" in train:  # a relative local path: the project folder's, whatever the cwd
            train["base_model"] = absolute_model(train["base_model"], project.path, folder_first=True)
        layers.append(ConfigLayer("project.toml [train]", train))
    return layers, s


def resolve(project: Project, overrides: Mapping[str, Any] | None = None,
            config_file: str | os.PathLike | None = None) -> ResolvedConfig:
    """Fold defaults < project < config file < `overrides` (CLI flags) into a validated config.

    Raises ConfigError naming every unknown key or bad value.
    """
    layers, s = project_layers(project)
    if config_file:
        layers.append(load_config_file(config_file))
    if overrides:
        cli = {k: v for k, v in overrides.items() if v is not None}  # None: the flag was not given
        if "base_model" in cli and isinstance(cli["base_model"], str):
            cli["base_model"] = absolute_model(cli["base_model"])
        layers.append(ConfigLayer("command line", cli))
    values = TrainConfig().to_dict()
    sources = {name: "default" for name in values}
    notes: list[str] = []
    for layer in layers:
        bad = train_config.unknown_keys(layer.values)
        if bad:
            raise ConfigError(f"{layer.source}: unknown key(s) {', '.join(bad)}",
                              hint="see docs/configuration.md for the keys")
        _limit_rule(values, layer.values)
        for key, value in layer.values.items():
            values[key] = value
            sources[key] = layer.source
        notes.extend(layer.notes)
    try:
        cfg = train_config.validate(TrainConfig(**values))
    except ConfigError as e:
        raise ConfigError(_with_sources(str(e), sources), hint=e.hint) from None
    family = model_family.detect(cfg.base_model)  # an unsupported architecture stops here, before a run exists

    dataset = {
        "project_dir": str(project.path.resolve()),
        "caption_extension": s.project.caption_extension,
        "trigger_word": s.project.trigger_word,
        "image_repeats": image_repeats(project),  # kohya N_name folders, fixed for the run's life
    }
    return ResolvedConfig(cfg, dataset, sources, notes, family=family)


def _with_sources(message: str, sources: Mapping[str, str]) -> str:
    """Name the layer behind each bad value: "rank: must be at least 1 (from --config x.toml)"."""
    head, sep, body = message.partition(": ")
    if not sep:
        return message
    parts = []
    for problem in body.split("; "):
        name = problem.split(":", 1)[0].strip()
        origin = sources.get(name)
        parts.append(f"{problem} (from {origin})" if origin and origin != "default" else problem)
    return head + sep + "; ".join(parts)


def to_toml(resolved: ResolvedConfig) -> str:
    """config.toml text: every TrainConfig field (None fields are left out) and [dataset]."""
    doc = tomlkit.document()
    doc.add(tomlkit.comment("The fully resolved config of this run (written by loradeck; read by the trainer"))
    doc.add(tomlkit.comment("and by `loradeck resume`). A key that is absent is unset (None)."))
    for key, value in resolved.config.to_dict().items():
        if value is not None:
            doc.add(key, value)
    table = tomlkit.table()
    for key in DATASET_KEYS:
        table.add(key, resolved.dataset[key])
    repeats = resolved.dataset.get("image_repeats") or {}
    if repeats:
        inline = tomlkit.inline_table()
        inline.update(repeats)
        table.add("image_repeats", inline)
    doc.add(DATASET_TABLE, table)
    return tomlkit.dumps(doc)


def write_run_config(path: Path, resolved: ResolvedConfig) -> None:
    atomic_write_text(path, to_toml(resolved))


def read_run_config(path: str | os.PathLike) -> tuple[TrainConfig, dict[str, Any]]:
    """Read runs/<id>/config.toml back: (TrainConfig, the [dataset] table)."""
    doc = read_toml(Path(path))
    dataset = doc.pop(DATASET_TABLE, None)
    if not isinstance(dataset, dict) or any(k not in dataset for k in DATASET_KEYS):
        raise ConfigError(f"{path}: the [dataset] table with {', '.join(DATASET_KEYS)} is missing")
    return train_config.from_run_file(doc, source=str(path)), dict(dataset)
