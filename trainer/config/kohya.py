"""Reading a kohya sd-scripts `train_network.py` TOML as loradeck run settings.

kohya flattens its tables ([general], [network], [optimizer], [training], ...: the names are only
for people), so every key is looked up on its own. Each key is one of:

- mapped: it has a loradeck equivalent (network_dim -> rank, train_batch_size -> batch_size, ...);
- accepted: it has no effect in loradeck and losing it changes nothing about the trained weights
  (output_dir: runs live in the project, see docs/configuration.md; logging, dataloader workers,
  bucket settings, which come from `loradeck prep`), reported as a note;
- off only: a kohya feature loradeck does not have; its "off" value is accepted, anything else is
  refused, because silently training something else than the file asks for is worse than an error;
- unknown: refused, all listed at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from loradeck.trainer.config.train_config import FIELD_NAMES, SCHEDULERS
from loradeck.trainer.errors import ConfigError

# Tables kohya's example configs (and kohya_ss) use; any table other than loradeck's own [train] /
# [dataset] marks a file as kohya, as does any key below that is not a loradeck field.
KOHYA_TABLES = ("general", "model", "model_arguments", "network", "additional_network_arguments",
                "optimizer", "optimizer_arguments", "training", "training_arguments", "dataset",
                "dataset_arguments", "saving", "saving_arguments", "sample_prompt", "sample_prompt_arguments",
                "logging", "logging_arguments", "huggingface_arguments", "advanced")
LORADECK_DATASET_KEYS = ("project_dir", "caption_extension", "trigger_word", "image_repeats")


class Skip:
    """A converter's answer for "this value sets nothing"."""


SKIP = Skip()


def _str_choice(key: str, choices: Mapping[str, str]) -> Callable[[Any], Any]:
    def convert(value):
        if value is None or value == "":
            return SKIP
        if not isinstance(value, str) or value.lower() not in choices:
            raise ValueError(f"{key} = {value!r} is not supported (use one of {', '.join(choices)})")
        return choices[value.lower()]
    return convert


def _resolution(value):
    """kohya writes "512,512", "512" or 512; loradeck trains square-area buckets of one size."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, (list, tuple)):
        parts = list(value)
    elif isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
    else:
        raise ValueError(f"resolution = {value!r} is not a size")
    try:
        sizes = [int(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(f"resolution = {value!r} is not a size") from None
    if len(sizes) not in (1, 2) or (len(sizes) == 2 and sizes[0] != sizes[1]):
        raise ValueError(f"resolution = {value!r}: only square resolutions are supported"
                         " (aspect ratios come from the prepared buckets)")
    return sizes[0]


def _same(value):
    return value


def _not(value):
    return not value


# kohya key -> (loradeck field, converter)
MAPPED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "pretrained_model_name_or_path": ("base_model", _same),
    "output_name": ("output_name", _same),
    "network_dim": ("rank", _same),
    "network_alpha": ("alpha", _same),
    "network_train_unet_only": ("train_text_encoder", _not),
    "optimizer_type": ("optimizer", _str_choice("optimizer_type", {"adamw": "adamw", "adamw8bit": "adamw8bit"})),
    "learning_rate": ("learning_rate", _same),
    "lr": ("learning_rate", _same),
    "unet_lr": ("learning_rate", _same),
    "text_encoder_lr": ("text_encoder_lr", _same),
    "max_grad_norm": ("max_grad_norm", _same),
    "lr_scheduler": ("lr_scheduler", _str_choice("lr_scheduler", {s: s for s in SCHEDULERS})),
    "lr_warmup_steps": ("lr_warmup_steps", _same),
    "max_train_steps": ("max_train_steps", _same),
    "max_train_epochs": ("max_train_epochs", _same),
    "train_batch_size": ("batch_size", _same),
    "gradient_accumulation_steps": ("gradient_accumulation_steps", _same),
    "dataset_repeats": ("repeats", _same),
    "seed": ("seed", _same),
    "resolution": ("resolution", _resolution),
    "mixed_precision": ("mixed_precision", _str_choice("mixed_precision", {"no": "no", "fp16": "fp16",
                                                                             "bf16": "bf16"})),
    "gradient_checkpointing": ("gradient_checkpointing", _same),
    "cache_latents": ("cache_latents", _same),
    "cache_latents_to_disk": ("cache_latents_to_disk", _same),
    "cache_text_encoder_outputs": ("cache_text_embeddings", _same),
    "noise_offset": ("noise_offset", lambda v: SKIP if v is None else v),
    "min_snr_gamma": ("min_snr_gamma", lambda v: SKIP if v is None else v),
    "shuffle_caption": ("shuffle_caption", _same),
    "keep_tokens": ("keep_tokens", _same),
    "caption_dropout_rate": ("caption_dropout_rate", _same),
    "save_every_n_epochs": ("save_every_epochs", lambda v: SKIP if v is None else v),
    "save_every_n_steps": ("save_every_steps", lambda v: SKIP if v is None else v),
    "save_last_n_epochs": ("save_last_n", lambda v: SKIP if v is None else v),
    "save_last_n_steps": ("save_last_n", lambda v: SKIP if v is None else v),
    "save_precision": ("save_precision", _str_choice("save_precision", {"float": "fp32", "fp32": "fp32",
                                                                           "fp16": "fp16", "bf16": "bf16"})),
    "sample_every_n_steps": ("sample_every_steps", lambda v: SKIP if v is None else v),
    "sample_every_n_epochs": ("sample_every_epochs", lambda v: SKIP if v is None else v),
    "v_parameterization": ("prediction_type", lambda v: "v_prediction" if v else SKIP),
    "no_half_vae": ("vae_fp32", lambda v: True if v else SKIP),
    "xformers": ("attention", lambda v: "xformers" if v else SKIP),
    "sdpa": ("attention", lambda v: "sdpa" if v else SKIP),
    "mem_eff_attn": ("attention", lambda v: "sdpa" if v else SKIP),
    "use_8bit_adam": ("optimizer", lambda v: "adamw8bit" if v else SKIP),
}

# Accepted keys with no effect on the trained weights in loradeck: key -> why.
ACCEPTED: dict[str, str] = {
    "output_dir": "runs are written to <project>/runs/<run-id>/; copy the result with `loradeck export`",
    "logging_dir": "loradeck logs to the run's events.jsonl and train.log",
    "log_with": "loradeck logs to the run's events.jsonl",
    "log_prefix": "loradeck logs to the run's events.jsonl",
    "log_tracker_name": "loradeck logs to the run's events.jsonl",
    "log_tracker_config": "loradeck logs to the run's events.jsonl",
    "wandb_api_key": "loradeck logs to the run's events.jsonl",
    "wandb_run_name": "loradeck logs to the run's events.jsonl",
    "log_config": "loradeck writes the resolved config to the run's config.toml",
    "train_data_dir": "a run trains the project's dataset/ folder",
    "caption_extension": "captions use the project's caption_extension",
    "caption_extention": "captions use the project's caption_extension",
    "enable_bucket": "loradeck always trains aspect buckets made by `loradeck prep`",
    "min_bucket_reso": "buckets are made by `loradeck prep` ([prep] in project.toml)",
    "max_bucket_reso": "buckets are made by `loradeck prep` ([prep] in project.toml)",
    "bucket_reso_steps": "buckets are made by `loradeck prep` ([prep] in project.toml)",
    "bucket_no_upscale": "buckets are made by `loradeck prep` ([prep] in project.toml)",
    "max_data_loader_n_workers": "data loading is tuned by loradeck",
    "persistent_data_loader_workers": "data loading is tuned by loradeck",
    "vae_batch_size": "latent caching batch size is chosen by loradeck",
    "lowram": "memory placement is chosen by loradeck",
    "highvram": "memory placement is chosen by loradeck",
    "save_model_as": "loradeck saves .safetensors",
    "save_state": "loradeck always saves resumable state with each checkpoint",
    "save_state_on_train_end": "loradeck always saves resumable state",
    "save_last_n_epochs_state": "resumable states follow save_last_n",
    "save_last_n_steps_state": "resumable states follow save_last_n",
    "training_comment": "not written to the LoRA metadata",
    "metadata_title": "not written to the LoRA metadata",
    "metadata_author": "not written to the LoRA metadata",
    "metadata_description": "not written to the LoRA metadata",
    "metadata_license": "not written to the LoRA metadata",
    "metadata_tags": "not written to the LoRA metadata",
    "sample_sampler": "samples use the base model's scheduler",
    "sample_at_first": "samples follow sample_every_steps / sample_every_epochs",
    "tokenizer_cache_dir": "tokenizers load from the base model",
    "ddp_timeout": "multi-GPU runs use accelerate's defaults",
    "ddp_gradient_as_bucket_view": "multi-GPU runs use accelerate's defaults",
    "ddp_static_graph": "multi-GPU runs use accelerate's defaults",
    "huggingface_repo_id": "uploading is not part of training",
    "huggingface_repo_type": "uploading is not part of training",
    "huggingface_path_in_repo": "uploading is not part of training",
    "huggingface_token": "uploading is not part of training",
    "huggingface_repo_visibility": "uploading is not part of training",
    "save_state_to_huggingface": "uploading is not part of training",
    "resume_from_huggingface": "uploading is not part of training",
    "async_upload": "uploading is not part of training",
    "output_config": "loradeck writes the resolved config to the run's config.toml",
    "config_file": "nested config files are not followed",
    "multires_noise_discount": "only used with multires_noise_iterations",
    "huber_c": "only used with loss_type huber",
    "huber_schedule": "only used with loss_type huber",
    "prior_loss_weight": "only used with regularisation images",
    "sample_prompts": "",  # handled below: read from the prompts file
    "network_module": "",  # checked below: must be networks.lora
}


def _is_default(default):
    return lambda v: v is None or v == default or v == "" or v == [] or v is False


# kohya features loradeck does not have: key -> (is its value "off"?, what to do instead)
OFF_ONLY: dict[str, tuple[Callable[[Any], bool], str]] = {
    key: (_is_default(default), why) for key, default, why in [
        ("v2", False, "SD 2.x base models are not supported"),
        ("full_fp16", False, "LoRA weights stay fp32; use mixed_precision"),
        ("full_bf16", False, "LoRA weights stay fp32; use mixed_precision"),
        ("fp8_base", False, "fp8 base weights are not supported"),
        ("clip_skip", 1, "clip skip is not supported"),
        ("max_token_length", 75, "captions are truncated at 75 tokens"),
        ("flip_aug", False, "augmentation is not supported"),
        ("color_aug", False, "augmentation is not supported"),
        ("random_crop", False, "augmentation is not supported"),
        ("face_crop_aug_range", None, "augmentation is not supported"),
        ("debug_dataset", False, "use `loradeck check`"),
        ("reg_data_dir", None, "regularisation images are not supported"),
        ("in_json", None, "fine-tuning metadata files are not supported; captions are sidecar files"),
        ("dataset_config", None, "a run trains the project's dataset/ folder"),
        ("network_weights", None, "continuing from an existing LoRA is not supported; use `loradeck resume`"),
        ("dim_from_weights", False, "continuing from an existing LoRA is not supported"),
        ("base_weights", None, "merging extra weights is not supported"),
        ("base_weights_multiplier", None, "merging extra weights is not supported"),
        ("network_train_text_encoder_only", False, "training only the text encoder is not supported"),
        ("network_args", None, "LoCon/LyCORIS network arguments are not supported"),
        ("network_dropout", 0, "network dropout is not supported"),
        ("scale_weight_norms", None, "max-norm regularisation is not supported"),
        ("zero_terminal_snr", False, "zero terminal SNR is not supported"),
        ("multires_noise_iterations", 0, "multires noise is not supported; use noise_offset"),
        ("adaptive_noise_scale", None, "adaptive noise scale is not supported"),
        ("noise_offset_random_strength", False, "random noise offset strength is not supported"),
        ("ip_noise_gamma", None, "input perturbation noise is not supported"),
        ("ip_noise_gamma_random_strength", False, "input perturbation noise is not supported"),
        ("debiased_estimation_loss", False, "debiased estimation loss is not supported; use min_snr_gamma"),
        ("scale_v_pred_loss_like_noise_pred", False, "v-pred loss scaling is not supported"),
        ("v_pred_like_loss", None, "v-pred-like loss is not supported"),
        ("loss_type", "l2", "only the l2 (MSE) loss is supported"),
        ("masked_loss", False, "masked loss is not supported"),
        ("alpha_mask", False, "masked loss is not supported"),
        ("weighted_captions", False, "weighted captions are not supported"),
        ("use_lion_optimizer", False, "use optimizer_type AdamW or AdamW8bit"),
        ("optimizer_args", None, "only weight_decay=<x> is supported"),
        ("lr_scheduler_type", None, "custom schedulers are not supported"),
        ("lr_scheduler_args", None, "scheduler arguments are not supported"),
        ("lr_scheduler_num_cycles", 1, "scheduler cycles are not supported"),
        ("lr_scheduler_power", 1, "the polynomial scheduler's power is fixed at 1"),
        ("vae", None, "a separate VAE is not supported; use a base model that includes it"),
        ("resume", None, "use `loradeck resume NAME RUN`"),
        ("caption_dropout_every_n_epochs", 0, "use caption_dropout_rate"),
        ("caption_tag_dropout_rate", 0, "tag dropout is not supported; use caption_dropout_rate"),
        ("caption_separator", ",", "captions are split at commas"),
        ("keep_tokens_separator", None, "use keep_tokens"),
        ("token_warmup_min", 1, "token warmup is not supported"),
        ("token_warmup_step", 0, "token warmup is not supported"),
        ("save_n_epoch_ratio", None, "use save_every_n_epochs"),
        ("stop_text_encoder_training", None, "text-encoder training runs to the end"),
        ("min_timestep", 0, "the full timestep range is trained"),
        ("max_timestep", 1000, "the full timestep range is trained"),
        ("initial_epoch", None, "use `loradeck resume`"),
        ("initial_step", None, "use `loradeck resume`"),
        ("skip_until_initial_step", False, "use `loradeck resume`"),
    ]
}


def looks_like_kohya(doc: Mapping[str, Any]) -> bool:
    """A kohya file has tables other than loradeck's [train] and run-config [dataset], or kohya keys."""
    for key, value in doc.items():
        if isinstance(value, dict):
            if key == "train":
                continue
            if key == "dataset" and set(value) <= set(LORADECK_DATASET_KEYS):
                continue
            return True
        if key not in FIELD_NAMES and (key in MAPPED or key in ACCEPTED or key in OFF_ONLY):
            return True
    return False


def flatten(doc: Mapping[str, Any]) -> dict[str, Any]:
    """kohya's reading: the keys of every table and the top-level keys, one flat namespace."""
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _read_prompts(value: Any, base_dir: Path) -> list[str]:
    """kohya's sample_prompts names a text file, one prompt a line, options after ` --`."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if not isinstance(value, str) or not value:
        raise ValueError(f"sample_prompts = {value!r} is not a prompts file")
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists():
        path = base_dir / path
    if path.suffix.lower() != ".txt":
        raise ValueError(f"sample_prompts: only .txt prompt files are read, not {path.name}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ValueError(f"sample_prompts: cannot read {path}: {e.strerror or e}") from None
    prompts = []
    for line in lines:
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(line.split(" --", 1)[0].strip())
    return [p for p in prompts if p]


def _weight_decay(value: Any) -> float | None:
    """optimizer_args = ["weight_decay=0.01"] -> 0.01; None if any other argument is present."""
    if not isinstance(value, list):
        return None
    found = None
    for arg in value:
        name, _, number = str(arg).partition("=")
        if name.strip() != "weight_decay":
            return None
        try:
            found = float(number)
        except ValueError:
            return None
    return found


def map_kohya(doc: Mapping[str, Any], *, base_dir: Path = Path("."),
              source: str = "kohya config") -> tuple[dict[str, Any], list[str]]:
    """Map a kohya TOML document to TrainConfig values; returns (values, notes for the user).

    Raises ConfigError listing every unknown key and every unsupported value at once.
    """
    flat = flatten(doc)
    values: dict[str, Any] = {}
    notes: list[str] = []
    unknown: list[str] = []
    unsupported: list[str] = []
    for key, value in flat.items():
        if key == "network_module":
            if value not in (None, "networks.lora"):
                unsupported.append(f"network_module = {value!r} (only networks.lora is supported)")
        elif key == "sample_prompts":
            if value:
                try:
                    values["sample_prompts"] = _read_prompts(value, base_dir)
                except ValueError as e:
                    unsupported.append(str(e))
                else:
                    notes.append(f"{source}: sample_prompts read from {value} (per-prompt --options dropped)")
        elif key == "optimizer_args" and _weight_decay(value) is not None:
            values["weight_decay"] = _weight_decay(value)
        elif key in MAPPED:
            name, convert = MAPPED[key]
            try:
                converted = convert(value)
            except ValueError as e:
                unsupported.append(str(e))
                continue
            if not isinstance(converted, Skip):
                values[name] = converted
        elif key in ACCEPTED:
            if value not in (None, "", [], False):
                notes.append(f"{source}: {key} has no effect ({ACCEPTED[key]})")
        elif key in OFF_ONLY:
            is_off, why = OFF_ONLY[key]
            if not is_off(value):
                unsupported.append(f"{key} = {value!r} ({why})")
        else:
            unknown.append(key)
    # kohya's precedence: unet_lr over learning_rate; max_train_epochs over max_train_steps.
    if "unet_lr" in flat and flat["unet_lr"] is not None:
        values["learning_rate"] = flat["unet_lr"]
    if flat.get("max_train_epochs") is not None:
        values.pop("max_train_steps", None)
    if flat.get("cache_latents_to_disk"):
        values["cache_latents"] = True  # kohya's to-disk flag implies caching
    if "network_train_unet_only" not in flat and "train_text_encoder" not in values:
        notes.append(f"{source}: network_train_unet_only is not set; kohya would also train the text"
                     " encoder, loradeck keeps train_text_encoder from its defaults (false)")
    problems = []
    if unknown:
        problems.append(f"unknown key(s): {', '.join(sorted(unknown))}")
    if unsupported:
        problems.append("unsupported: " + "; ".join(unsupported))
    if problems:
        raise ConfigError(f"{source} (kohya format): " + ". ".join(problems),
                          hint="see docs/configuration.md, kohya mapping")
    return values, notes
