"""THE training loop: SD1.x LoRA with diffusers + peft + accelerate, read top to bottom.

    place and precision -> load the base model -> freeze, attention, checkpointing -> add the LoRA
    -> dataset and batch plan -> caches -> optimizer and LR schedule -> resume -> for each step:
    encode, noise, predict, loss, backward, clip, step, log, checkpoint, sample, stop? -> export

It is called by loradeck.trainer.train.process, which owns the process side (run files, heartbeat, signals,
turning exceptions into events). Everything here reports through `ctx.events` and `ctx.progress`.

Determinism, which resume relies on: micro-batch i of the run (its images, caption shuffle/dropout,
posterior sample, noise and timesteps) is a function of (seed, i) alone, so a resumed run computes
exactly what an uninterrupted run would from the restored weights, optimizer and schedule.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import random
import resource
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from loradeck.trainer.config import model_family
from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.errors import ConfigError
from loradeck.trainer.events import iter_file
from loradeck.trainer.gpu import vram_estimate
from loradeck.trainer.lora import file_format as lora_file
from loradeck.trainer.lora import sdxl_names as lora_sdxl
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.train import data as train_data
from loradeck.trainer.train import (
    diagnostics,
    lora_network,
    models,
    optional_packages,
    sampling,
    sdxl_conditioning,
    step_count,
)
from loradeck.trainer.train import latent_cache as caching  # `latent_cache` is the loop's cache object
from loradeck.trainer.train import state as train_state
from loradeck.trainer.train.diagnostics import TrainingFailed
from loradeck.trainer.train.network_setup import make_optimizer, place_unet, prepare_networks
from loradeck.trainer.train.run_guard import check_run_folder

WEIGHT_DTYPES = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}
# Test hook: LORADECK_FAULT=oom:3 raises a CUDA out-of-memory error in the forward pass of step 3.
FAULT_ENV = "LORADECK_FAULT"


@dataclass
class RunContext:
    """What the process side hands the loop."""

    files: RunFiles
    config: TrainConfig
    dataset: dict[str, Any]  # the run's [dataset] table: project_dir, caption_extension, trigger_word
    events: Any  # loradeck.trainer.events.EventWriter (or a stand-in with .emit on non-main ranks)
    progress: dict[str, Any] = field(default_factory=dict)  # read by the heartbeat thread
    stop: threading.Event = field(default_factory=threading.Event)
    resume: bool = False
    is_main: bool = True


@dataclass
class Outcome:
    status: str  # completed | stopped
    steps_done: int
    output: Path | None = None


def train(ctx: RunContext) -> Outcome:
    import torch  # torch: only when training runs, not when this module is imported
    import torch.nn.functional as F

    cfg = ctx.config
    warn = lambda message: ctx.events.emit("warning", message=message)  # noqa: E731

    # ---- 1. Placement and precision -------------------------------------------------------------
    accelerator, mixed_precision = make_accelerator(cfg, warn)
    device = accelerator.device
    weight_dtype = getattr(torch, WEIGHT_DTYPES[mixed_precision])
    vae_dtype = torch.float32 if cfg.vae_fp32 else weight_dtype
    rank, world = accelerator.process_index, accelerator.num_processes

    # ---- 2. Base model --------------------------------------------------------------------------
    ctx.progress.update(state="starting", phase="loading model")
    model = models.load_base_model(cfg.base_model, dtype=weight_dtype, vae_dtype=vae_dtype)  # no fp32 copy held
    tokenizer, text_encoder, vae, unet = model.tokenizer, model.text_encoder, model.vae, model.unet
    text_encoder_2 = model.text_encoder_2  # SDXL's second encoder (None for SD1.x)
    model.text_encoder = model.vae = model.unet = model.text_encoder_2 = None  # the loop owns them now
    noise_scheduler = model.noise_scheduler()
    prediction_type = models.resolve_prediction_type(cfg.prediction_type, model)
    noise_scheduler.register_to_config(prediction_type=prediction_type)

    # ---- 3. Freeze, attention, gradient checkpointing, adapters ----------------------------------
    sample_prompts = list(cfg.sample_prompts)
    sampling = bool(sample_prompts) and bool(cfg.sample_every_steps or cfg.sample_every_epochs) and ctx.is_main
    if (cfg.sample_every_steps or cfg.sample_every_epochs) and not sample_prompts:
        warn("sampling is on but the config has no sample_prompts; no samples will be made")

    if optional_packages.attention_warning(cfg.attention):  # xformers asked for, not installed
        warn(optional_packages.attention_warning(cfg.attention))
    # On a GPU the UNet waits on the CPU while latents are cached: caching then needs only the VAE and the
    # text encoders on the GPU, not the largest model too (SDXL: ~4.8 GiB less at that moment).
    unet_waits = cfg.cache_latents and device.type == "cuda"
    unet_params, te_params = prepare_networks(cfg, unet, vae, text_encoder, device=device, weight_dtype=weight_dtype,
                                              vae_dtype=vae_dtype, sampling=sampling,
                                              attention=optional_packages.attention_used(cfg.attention),
                                              text_encoder_2=text_encoder_2, unet_waits=unet_waits)
    text_encoders = [te for te in (text_encoder, text_encoder_2) if te is not None]

    # ---- 4. Dataset and the order of batches -----------------------------------------------------
    ctx.progress.update(phase="reading dataset")
    dataset_dir = Path(ctx.dataset["project_dir"]) / "dataset"
    granularity = model_family.granularity(len(vae.config.block_out_channels), len(unet.config.block_out_channels))
    items = train_data.scan(dataset_dir, caption_extension=ctx.dataset.get("caption_extension", ".txt"),
                            trigger_word=ctx.dataset.get("trigger_word", ""), granularity=granularity,
                            image_repeats=ctx.dataset.get("image_repeats"))
    skipped = train_data.unreadable_count(dataset_dir, items)
    if skipped:
        warn(f"{skipped} image(s) in dataset/ could not be read and are skipped")
    plan = train_data.BatchPlan(items, batch_size=cfg.batch_size, repeats=cfg.repeats, seed=cfg.seed,
                                num_processes=world, process_index=rank)
    total_steps = step_count.total_steps(cfg, plan.batches_per_epoch)  # what check and the train form show
    ga = cfg.gradient_accumulation_steps

    # ---- 5. Caches: encode once, then free what training no longer needs -------------------------
    def encode_text(captions):
        ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt").input_ids.to(device)
        return text_encoder(ids)[0]

    sdxl = model.family == "sdxl"  # SDXL: (hidden, pooled) from both encoders and per-image time ids
    if sdxl:
        encode_text = sdxl_conditioning.SdxlText((tokenizer, model.tokenizer_2), text_encoders, device)
        recorded_sizes = sdxl_conditioning.micro_conditioning(ctx.dataset["project_dir"])

    latent_cache = None
    if cfg.cache_latents:
        ctx.progress.update(phase="caching latents")
        disk = Path(ctx.dataset["project_dir"]) / ".loradeck" / "latents" if cfg.cache_latents_to_disk else None
        latent_cache = caching.LatentCache(vae, models.vae_identity(vae), disk_dir=disk, device=device, dtype=vae_dtype)
        latent_cache.fill(items, batch_size=caching.VAE_BATCH)
        latent_cache.vae = None
        vae = free_vae_encoder(vae, keep_decoder=sampling, on_gpu=device.type == "cuda")
    text_cache = None
    if cfg.cache_text_embeddings:
        ctx.progress.update(phase="caching text embeddings")
        text_cache = caching.TextEmbeddingCache()
        with torch.no_grad():
            text_cache.fill([i.caption for i in items] + sample_prompts + [""],
                            lambda c: _float_cpu(encode_text(c)))
        text_encoder = text_encoder_2 = None  # every caption and prompt is cached: encoders not needed again
        text_encoders = []
        if sdxl:
            encode_text.text_encoders = []
    gc.collect()
    if unet_waits:
        place_unet(unet, device)
    pixels_of = train_data.PixelMemo()

    # ---- 6. Optimizer and LR schedule ------------------------------------------------------------
    optimizer = make_optimizer(cfg, unet_params, te_params)
    from diffusers.optimization import get_scheduler  # diffusers: off this module's import, as torch is

    lr_scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                                 num_training_steps=total_steps)
    if cfg.train_text_encoder and text_encoder_2 is not None:
        unet, text_encoder, text_encoder_2, optimizer = accelerator.prepare(unet, text_encoder, text_encoder_2,
                                                                            optimizer)
        if sdxl:
            encode_text.text_encoders = [text_encoder, text_encoder_2]
    elif cfg.train_text_encoder:
        unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)
    else:
        unet, optimizer = accelerator.prepare(unet, optimizer)
    params = unet_params + te_params
    scaler = getattr(accelerator, "scaler", None)

    # ---- 7. Resume -------------------------------------------------------------------------------
    start_step = 0
    resumed_from = None
    if ctx.resume:
        candidates = train_state.newest_first(ctx.files.state)
        if not candidates:
            warn("no saved state to resume from; starting from step 0")
        damaged = []
        for saved in candidates:  # a damaged newest state falls back to the one before it
            try:
                unet_lora, te_lora = train_state.load(saved, optimizer=optimizer, lr_scheduler=lr_scheduler,
                                                      scaler=scaler)
                lora_network.load_lora_state_dict(accelerator.unwrap_model(unet), unet_lora)
                if te_lora and cfg.train_text_encoder:
                    lora_network.load_text_encoders_state_dict(
                        accelerator.unwrap_model(text_encoder),
                        accelerator.unwrap_model(text_encoder_2) if text_encoder_2 is not None else None, te_lora)
            except (train_state.DamagedState, ValueError, RuntimeError) as e:
                damaged.append(str(e))
                warn(f"saved state {e} cannot be used; trying an older one")
                continue
            start_step, resumed_from = saved.step, str(saved.path)
            break
        if candidates and resumed_from is None:
            raise ConfigError(f"no usable saved state to resume from: {'; '.join(damaged)}",
                              hint="start a new run (the run's checkpoints/ LoRA files are untouched)")

    def save_state(step: int) -> Path | None:
        if not ctx.is_main:
            return None
        check_run_folder(ctx.files, ctx.dataset.get("project_dir"))  # never recreate a deleted run
        return train_state.save(
            ctx.files.state, step=step, meta={"epoch": epoch_of(step), "total_steps": total_steps,
                                              "micro_batches": step * ga},
            unet_lora=lora_network.lora_state_dict(accelerator.unwrap_model(unet)),
            te_lora=lora_network.text_encoders_state_dict(
                accelerator.unwrap_model(text_encoder),
                accelerator.unwrap_model(text_encoder_2) if text_encoder_2 is not None else None)
            if cfg.train_text_encoder else None,
            optimizer=optimizer, lr_scheduler=lr_scheduler, scaler=scaler)

    def epoch_of(step: int) -> int:
        return (step * ga) // plan.batches_per_epoch

    ctx.events.emit(
        "run_started", run_id=ctx.files.run_id, config=cfg.to_dict(), environment=environment(device),
        device=str(device), mixed_precision=mixed_precision, prediction_type=prediction_type,
        model_family=model.family,
        total_steps=total_steps, start_step=start_step, resumed_from=resumed_from, images=len(items),
        buckets=sorted({f"{w}x{h}" for w, h in (i.size for i in items)}),
        batches_per_epoch=plan.batches_per_epoch, trainable_params=sum(p.numel() for p in params),
        lora_modules=lora_network.count_modules(accelerator.unwrap_model(unet)),
        attention_processor=type(next(iter(accelerator.unwrap_model(unet).attn_processors.values()))).__name__,
        gradient_checkpointing=accelerator.unwrap_model(unet).is_gradient_checkpointing,
        latent_cache=dict(latent_cache.stats) if latent_cache else None,
        text_embeddings_cached=len(text_cache) if text_cache else None,
        weight_dtype=str(weight_dtype).replace("torch.", ""), vae_dtype=str(vae_dtype).replace("torch.", ""),
        # Predicted GPU memory, for the monitor to set against mem_peak; a CPU run has nothing to compare.
        vram_estimate=memory_estimate(cfg, warn) if ctx.is_main and accelerator.device.type == "cuda" else None)
    ctx.progress.update(state="running", phase="training", step=start_step, total_steps=total_steps)
    fault = injected_fault()

    # ---- 8. The loop -----------------------------------------------------------------------------
    step = start_step
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    while step < total_steps:
        if stop_requested(ctx, accelerator):
            break
        t_start = time.perf_counter()
        loss_sum, n_images = 0.0, 0
        try:
            for micro in range(ga):
                index = step * ga + micro
                epoch, batch = plan.micro_batch(index)
                gen = torch.Generator().manual_seed(hash_seed(cfg.seed, index, rank))
                rng = random.Random(hash_seed(cfg.seed, index, rank))

                # Latents: a fresh sample of each image's VAE posterior (cached or encoded now).
                if latent_cache is not None:
                    mean, std = latent_cache.get(batch)
                else:
                    mean, std = caching.encode_posterior(vae, [pixels_of(i) for i in batch], device, vae_dtype)
                latents = caching.sample_latents(mean, std, vae.config, gen)
                if not torch.isfinite(latents).all():  # the VAE overflowed: say so, not "training diverged"
                    raise diagnostics.vae_nan_failure(cfg, step + 1, [Path(i.path).name for i in batch],
                                                      str(vae_dtype).replace("torch.", ""))

                # Conditioning: this step's captions (shuffled / dropped) through the text encoder.
                captions = [train_data.process_caption(i.caption, rng, shuffle=cfg.shuffle_caption,
                                                       keep_tokens=cfg.keep_tokens,
                                                       dropout_rate=cfg.caption_dropout_rate) for i in batch]
                if text_cache is not None:
                    hidden = _to(text_cache.get(captions), device)
                else:
                    with torch.no_grad() if not cfg.train_text_encoder else contextlib.nullcontext():
                        hidden = encode_text(captions)
                extra = {}
                if sdxl:
                    hidden, pooled = hidden
                    extra = sdxl_conditioning.unet_kwargs(pooled, sdxl_conditioning.time_ids(batch, recorded_sizes),
                                                          weight_dtype)

                # Noise and timesteps, then the target the model is trained to predict.
                noise = training_noise(latents.shape, cfg.noise_offset, gen)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                          generator=gen)
                latents, noise, timesteps = latents.to(device), noise.to(device), timesteps.to(device)
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                target = noise if prediction_type == "epsilon" else \
                    noise_scheduler.get_velocity(latents, noise, timesteps)

                if fault and fault[1] == step + 1:
                    raise fault[0]
                with accelerator.autocast():
                    pred = unet(noisy.to(weight_dtype), timesteps, hidden.to(weight_dtype), **extra).sample
                loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
                if cfg.min_snr_gamma:
                    loss = loss * min_snr_weights(noise_scheduler, timesteps, cfg.min_snr_gamma, prediction_type)
                loss = loss.mean()
                if not torch.isfinite(loss):
                    raise diagnostics.nan_failure(cfg, loss.item(), step + 1)
                sync = micro == ga - 1
                with contextlib.nullcontext() if sync or world == 1 else accelerator.no_sync(unet):
                    accelerator.backward(loss / ga)
                loss_sum += loss.item() * len(batch)
                n_images += len(batch)

            grad_norm = None
            if cfg.max_grad_norm:
                grad_norm = accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        except TrainingFailed as failure:
            failure.state = save_state_if_sound(save_state, params, step)
            raise
        except Exception as e:
            if not diagnostics.is_oom(e):
                raise
            failure = diagnostics.oom_failure(cfg, e, step + 1)
            del e  # drop the traceback's references to the step's tensors before freeing them
            optimizer.zero_grad(set_to_none=True)
            diagnostics.free_accelerator_memory()
            failure.state = save_state_if_sound(save_state, params, step)
            raise failure from None

        step += 1
        step_time = time.perf_counter() - t_start
        ctx.progress.update(step=step)
        if ctx.is_main:  # a project deleted under the run ends it now, not at its next save
            check_run_folder(ctx.files, ctx.dataset.get("project_dir"))
        ctx.events.emit("step", step=step, total_steps=total_steps, epoch=epoch_of(step - 1) + 1,
                        loss=loss_sum / max(1, n_images), lr=lr_scheduler.get_last_lr()[0],
                        lr_te=lr_scheduler.get_last_lr()[1] if te_params else None,
                        grad_norm=float(grad_norm) if grad_norm is not None else None,
                        step_time=round(step_time, 4), samples_per_sec=round(n_images * world / step_time, 3),
                        **memory_fields(device))

        epoch_ended = epoch_of(step) > epoch_of(step - 1)
        done_epochs = epoch_of(step)
        final = step == total_steps
        if ctx.is_main and not final and (
                (cfg.save_every_steps and step % cfg.save_every_steps == 0)
                or (epoch_ended and cfg.save_every_epochs and done_epochs % cfg.save_every_epochs == 0)):
            ctx.progress.update(phase="saving checkpoint")
            state_path = save_state(step)
            path = export_lora(ctx, accelerator, unet, (text_encoder, text_encoder_2), items, model, step,
                               done_epochs, ctx.files.checkpoint(cfg.output_name, step))
            prune_checkpoints(ctx.files, cfg.output_name, cfg.save_last_n)
            ctx.events.emit("checkpoint", step=step, path=str(path), state=str(state_path), epoch=done_epochs)
        if sampling and ((cfg.sample_every_steps and step % cfg.sample_every_steps == 0)
                         or (epoch_ended and cfg.sample_every_epochs and done_epochs % cfg.sample_every_epochs == 0)):
            ctx.progress.update(phase="sampling")
            try:
                make_samples(ctx, accelerator, unet, vae, model.scheduler_config, sample_prompts, step, device,
                             weight_dtype, text_cache, encode_text)
            except Exception as e:
                if not diagnostics.is_oom(e):
                    raise
                failure = diagnostics.phase_oom_failure(cfg, e, "sampling", step)
                del e
                diagnostics.free_accelerator_memory()
                failure.state = save_state_if_sound(save_state, params, step)  # the step is done: keep it
                raise failure from None
        ctx.progress.update(phase="training")

    # ---- 9. Stopped, or the final export ---------------------------------------------------------
    if step < total_steps:
        ctx.progress.update(state="stopping", phase="saving state")
        save_state(step)
        return Outcome("stopped", step)
    output = None
    if ctx.is_main:
        ctx.progress.update(phase="exporting")
        output = export_lora(ctx, accelerator, unet, (text_encoder, text_encoder_2), items, model, step,
                             epoch_of(step), ctx.files.output(cfg.output_name))
    accelerator.wait_for_everyone()
    return Outcome("completed", step, output)


# ------------------------------------------------------------------------------------------ helpers

def make_accelerator(cfg: TrainConfig, warn):
    """The Accelerator for this run, and the mixed precision actually used (fp16 needs CUDA)."""
    import torch  # accelerate, torch: only when training runs, not when this module is imported
    from accelerate import Accelerator

    cuda = torch.cuda.is_available()
    mixed_precision = cfg.mixed_precision
    if not cuda:
        warn("no CUDA GPU found: training on the CPU (slow; fine for synthetic:tiny and tests)")
        if mixed_precision == "fp16":
            warn("fp16 mixed precision needs a CUDA GPU; training in fp32 on the CPU (bf16 works on CPUs)")
            mixed_precision = "no"
    elif mixed_precision == "bf16" and not torch.cuda.is_bf16_supported():
        raise ConfigError("mixed_precision bf16: this GPU does not support bfloat16", hint="use --mixed-precision fp16")
    # accelerate: only when training runs, not when this module is imported
    from accelerate.state import AcceleratorState

    # The state is a per-process singleton; a fresh one per run lets runs share a process (tests).
    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(mixed_precision=mixed_precision, cpu=not cuda), mixed_precision


def stop_requested(ctx: RunContext, accelerator) -> bool:
    """A signal seen by any rank stops every rank at the same step (no rank left waiting in an all-reduce)."""
    if accelerator.num_processes == 1:
        return ctx.stop.is_set()
    import torch  # torch: only when training runs, not when this module is imported

    flag = torch.tensor([1 if ctx.stop.is_set() else 0], device=accelerator.device)
    return bool(accelerator.gather(flag).max().item())


def hash_seed(seed: int, index: int, rank: int) -> int:
    """A per-micro-batch seed: independent streams for every (seed, index, rank)."""
    return (seed * 1_000_003 + index * 7_919 + rank * 104_729) % (2 ** 63 - 1)


def training_noise(shape, noise_offset: float, generator):
    """Gaussian noise shaped like the latents, plus `noise_offset` times one draw per (sample, channel) when set
    (the noise-offset trick, which lets the model shift whole-image brightness). Draws in this order from
    `generator`, which resume's determinism relies on."""
    import torch  # heavy: kept off the import of this module, as elsewhere here

    noise = torch.randn(shape, generator=generator)
    if noise_offset:
        noise += noise_offset * torch.randn((shape[0], shape[1], 1, 1), generator=generator)
    return noise


def min_snr_weights(noise_scheduler, timesteps, gamma: float, prediction_type: str):
    """Min-SNR-gamma loss weights (Hang et al. 2023): min(SNR, gamma) / SNR (/ (SNR + 1) for v)."""
    alphas_cumprod = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    clipped = snr.clamp(max=gamma)
    return clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr


def free_vae_encoder(vae, *, keep_decoder: bool, on_gpu: bool):
    """After latents are cached only the decoder is needed (for samples); on a GPU it waits on the CPU."""
    if not keep_decoder:
        return _ConfigOnly(vae.config)
    vae.encoder = None
    vae.quant_conv = None
    if on_gpu:
        import torch  # torch: only when training runs, not when this module is imported

        vae.to("cpu", dtype=torch.float32)  # CPUs have no fast fp16 convolutions
        torch.cuda.empty_cache()
    return vae


class _ConfigOnly:
    """What is left of a freed VAE: its config (scaling factor) for latent sampling."""

    def __init__(self, config):
        self.config = config


def save_state_if_sound(save_state, params, step: int) -> Path | None:
    """Save resumable state after a failure, unless the weights themselves are already broken."""
    import torch  # torch: only when training runs, not when this module is imported

    try:
        if all(torch.isfinite(p).all() for p in params):
            return save_state(step)
    except Exception:  # saving is best effort here; the failure itself is what gets reported
        return None
    return None


def memory_estimate(cfg: TrainConfig, warn) -> dict[str, Any] | None:
    """The run's predicted GPU memory for run_started (the monitor sets it against mem_peak)."""
    try:
        e = vram_estimate.estimate(cfg)
    except Exception as e:  # a prediction must never stop a run; say why it is missing
        warn(f"no GPU memory estimate for this run ({type(e).__name__}: {str(e)[:120]})")
        return None
    return {"expected_peak_bytes": e.expected_peak_bytes, "nvidia_smi_bytes": e.nvidia_smi_bytes,
            "breakdown": e.breakdown}


def memory_fields(device) -> dict[str, Any]:
    import torch  # torch: only when training runs, not when this module is imported

    fields = {"rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    if device.type == "cuda":
        fields.update(mem_allocated=torch.cuda.memory_allocated(device),
                      mem_peak=torch.cuda.max_memory_allocated(device))
    else:
        fields.update(mem_allocated=None, mem_peak=None)
    return fields


def environment(device) -> dict[str, Any]:
    """Versions and hardware for run_started (optional packages by metadata, without importing them)."""
    import torch  # torch: only when training runs, not when this module is imported

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    cuda = torch.cuda.is_available()
    return {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "cuda_available": cuda, "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0, "device": str(device),
        "diffusers": version("diffusers"), "transformers": version("transformers"), "peft": version("peft"),
        "accelerate": version("accelerate"), "xformers": version("xformers"),
        "bitsandbytes": version("bitsandbytes"), "cpu_threads": torch.get_num_threads(),
    }


def injected_fault():
    """(exception, step) from $LORADECK_FAULT (tests only), or None."""
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    kind, _, at = spec.partition(":")
    import torch  # torch: only when training runs, not when this module is imported

    if kind == "oom":
        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected by test)"), int(at or 1)
    return None


def export_lora(ctx: RunContext, accelerator, unet, text_encoders, items, model, step: int, epochs: int,
                path: Path) -> Path:
    """Write the adapter as a kohya-format LoRA (loradeck.trainer.lora.file_format) with its ss_* metadata.

    `text_encoders` is (te1, te2); te2 is None for SD1.x. SDXL files use kohya's SDXL layout."""
    cfg = ctx.config
    unet_lora = lora_network.lora_state_dict(accelerator.unwrap_model(unet))
    te_loras = [lora_network.lora_state_dict(accelerator.unwrap_model(te)) if cfg.train_text_encoder and te
                is not None else None for te in text_encoders]
    if model.family == "sdxl":
        tensors = lora_sdxl.peft_to_kohya_sdxl(unet_lora, te_loras[0], te_loras[1], alpha=cfg.alpha,
                                               unet_config=dict(accelerator.unwrap_model(unet).config))
    else:
        tensors = lora_file.peft_to_kohya(unet_lora, te_loras[0], alpha=cfg.alpha)
    name = Path(ctx.dataset["project_dir"]).name
    folders = train_data.kohya_folders(items, name, cfg.repeats)
    tags: dict[str, dict[str, int]] = {}
    for n, members in folders.items():
        tags.update(train_data.tag_frequency(members, f"{n}_{name}"))
    metadata = lora_file.kohya_metadata(
        config=cfg.to_dict(), base_model=cfg.base_model, base_model_version=models.base_model_version(model),
        resolution=cfg.resolution, tag_frequency=tags,
        num_train_images=sum(n * len(members) for n, members in folders.items()), steps=step, epochs=epochs,
        output_name=cfg.output_name,
        extra={"trigger": ctx.dataset.get("trigger_word") or "", "run_id": ctx.files.run_id,
               "training_started_at": run_started_at(ctx.files)},
        dataset_dirs={f"{n}_{name}": {"n_repeats": n, "img_count": len(members)} for n, members in folders.items()})
    check_run_folder(ctx.files, ctx.dataset.get("project_dir"))
    path.parent.mkdir(exist_ok=True)  # checkpoints/ or the run folder itself: never its parents
    lora_file.save_kohya_lora(path, tensors, metadata, precision=cfg.save_precision)
    return path


def _float_cpu(out):
    """Encoder outputs (a tensor, or SDXL's tuple of them) as fp32 CPU tensors for the text cache."""
    return tuple(t.float().cpu() for t in out) if isinstance(out, tuple) else out.float().cpu()


def _to(out, device):
    return tuple(t.to(device) for t in out) if isinstance(out, tuple) else out.to(device)


def run_started_at(files: RunFiles) -> float | None:
    """When the run first started (its first run_started event; a resumed run keeps the original)."""
    with contextlib.suppress(OSError):
        for event in iter_file(files.events):
            if event.get("type") == "run_started":
                return event.get("time")
    return None


def prune_checkpoints(files: RunFiles, output_name: str, keep: int) -> None:
    """Keep the newest `keep` step checkpoints of this run (never touches other files)."""
    found = list(files.checkpoint_files(output_name).values())
    for old in found[:-keep] if keep else []:
        with contextlib.suppress(OSError):
            old.unlink()


def make_samples(ctx: RunContext, accelerator, unet, vae, scheduler_config, prompts, step: int, device,
                 weight_dtype, text_cache, encode_text) -> None:
    import torch  # torch: only when training runs, not when this module is imported

    cfg = ctx.config
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with torch.no_grad():
        if text_cache is not None:
            embeds, negative = text_cache.get(prompts), text_cache.get([""])
        else:
            embeds, negative = _float_cpu(encode_text(prompts)), _float_cpu(encode_text([""]))
    if isinstance(embeds, tuple):  # SDXL: one (hidden, pooled) pair per prompt
        embeds, negative = list(zip(*embeds)), tuple(t[0] for t in negative)
    else:
        negative = negative[0]
    images = sampling.sample_images(
        unet=accelerator.unwrap_model(unet), vae=vae, scheduler_config=scheduler_config, prompt_embeds=list(embeds),
        negative_embeds=negative, resolution=cfg.resolution, steps=cfg.sample_steps, guidance=cfg.sample_guidance,
        seed=cfg.seed, device=device, dtype=weight_dtype, autocast_ctx=accelerator.autocast)
    check_run_folder(ctx.files, ctx.dataset.get("project_dir"))
    for k, (prompt, image) in enumerate(zip(prompts, images)):
        path = sampling.save_image(image, ctx.files.samples / f"step{step:08d}-{k:02d}.png")
        ctx.events.emit("sample", step=step, path=str(path), prompt=prompt, index=k)
    if device.type == "cuda":
        torch.cuda.empty_cache()
