"""Peak GPU memory of a training run, predicted without a GPU and without reading any weight.

API (used by `loradeck estimate`, `loradeck train`'s fit check, the train form and GPU placement):

    estimate(config: TrainConfig) -> Estimate
        .expected_peak_bytes   what torch.cuda.max_memory_allocated() reports during training (the
                               loop resets the peak after caching, as step events' mem_peak do)
        .nvidia_smi_bytes      what nvidia-smi shows for the process: the allocator's reserved
                               memory (max over caching and training) plus the CUDA context
        .breakdown             {part: bytes} at the peak (see PARTS), and .sources saying where
                               each part comes from
        .to_dict()             JSON-ready
    fit_advice(config, free_bytes) -> Advice | None
        the cheapest knobs, applied in the trainer's order of cost, that bring nvidia_smi_bytes
        under `free_bytes` (None when it already fits)

How: the base model's architecture is built on the `meta` device (loradeck.trainer.gpu.model_skeleton), and the
trainer's own setup (loradeck.trainer.train.network_setup.prepare_networks: freeze, attention processor, dtype casts,
LoRA adapters, gradient checkpointing) is applied to it. Then one optimizer step is traced the way
the loop runs it (VAE encode unless latents are cached, the text encoder unless its outputs are
cached, UNet forward under autocast, backward with checkpointing, grad scaling and clipping) with
a tensor-lifetime tracker (loradeck.trainer.gpu.memory_trace). SDXL steps run the loop's own
conditioning (loradeck.trainer.train.sdxl_conditioning): both text encoders' penultimate hidden states
concatenated, text_encoder_2's pooled projection and the (batch, 6) time ids as the UNet's
added_cond_kwargs; cached text embeddings arrive as the fp32 (hidden, pooled) pair the cache holds.
What cannot be traced on meta is modelled and stated: the optimizer state (fused AdamW: two fp32
tensors and a step per parameter; bitsandbytes AdamW8bit: two uint8 tensors plus an fp32 absmax per
256-element block, 32-bit state for tensors under 4096 elements), CUDA autocast's casts and the fused attention kernels (memory_trace), and
the CUDA context and allocator overhead (constants below).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from loradeck.trainer.config import model_family
from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.gpu import estimate_cache, model_skeleton
from loradeck.trainer.train import latent_cache, network_setup, sdxl_conditioning

MiB = 1024 ** 2
GiB = 1024 ** 3

# Not traceable without a GPU; stated, and compared with NVML by bench/bench_gpu_matrix.py.
CUDA_CONTEXT_BYTES = 500 * MiB  # driver + torch kernels with CUDA 12 lazy loading: 300-600 MB on recent GPUs
CUBLAS_WORKSPACE_BYTES = 32 * MiB  # torch's cuBLAS(Lt) workspaces come from the caching allocator (Hopper size)
ALLOCATOR_FRAGMENTATION = 0.08  # reserved exceeds the allocated peak by block splitting / 2 MiB and 20 MiB segments
ALLOCATOR_SLACK_BYTES = 64 * MiB  # small-allocation pool and partly used segments

PARTS = ("frozen weights", "adapter weights", "adapter grads", "optimizer state", "activations",
         "backward temporaries", "inputs", "cuBLAS workspace")
SOURCES = {
    "frozen weights": "traced: UNet (+ VAE unless latents are cached, + the text encoder(s) unless their "
                      "outputs are cached; SDXL has two) in the run's dtypes",
    "adapter weights": "traced: the LoRA parameters the trainer adds (fp32)",
    "adapter grads": "traced: fp32 gradients of the adapter",
    "optimizer state": "modelled: fused AdamW 2 x fp32 per parameter; AdamW8bit 2 x uint8 + fp32 absmax "
                       "per 256 elements",
    "activations": "traced: tensors alive from the forward pass (autocast dtypes; sdpa/xformers keep the "
                   "log-sum-exp, eager keeps the attention matrix)",
    "backward temporaries": "traced: gradients in flight and recomputed checkpoint segments",
    "inputs": "traced: pixels or cached latents, noise, timesteps, text embeddings (SDXL: + pooled "
              "embedding and time ids) on the GPU",
    "cuBLAS workspace": "constant: torch's cuBLAS workspace (allocated through the caching allocator)",
    "allocator overhead": f"constant: reserved = allocated x {1 + ALLOCATOR_FRAGMENTATION:.2f} + "
                          f"{ALLOCATOR_SLACK_BYTES // MiB} MiB (caching-allocator segments)",
    "CUDA context": f"constant: {CUDA_CONTEXT_BYTES // MiB} MiB (driver and kernels; not in torch's counters)",
}
WEIGHT_DTYPES = {"no": "float32", "fp16": "float16", "bf16": "bfloat16"}


@dataclass
class Estimate:
    expected_peak_bytes: int  # torch.cuda.max_memory_allocated during training
    nvidia_smi_bytes: int  # the process as nvidia-smi shows it
    breakdown: dict[str, int]  # at the training peak, PARTS
    caching_peak_bytes: int | None  # allocated peak while caching latents (None: not caching)
    reserved_bytes: int
    context_bytes: int
    peak_phase: str  # where in the step the peak falls
    seconds: float  # how long the estimate took
    config: dict[str, Any] = field(default_factory=dict)  # the knobs it was made for
    sources: dict[str, str] = field(default_factory=lambda: dict(SOURCES))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Estimate":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Advice:
    changes: list[str]  # the knobs, as flags, in the order applied
    config: TrainConfig
    estimate: Estimate


# Set to 1 to trace every time (the tests do, so a patched estimator is never answered from the cache).
NO_CACHE_ENV = "LORADECK_NO_ESTIMATE_CACHE"
KNOB_FIELDS = ("base_model", "resolution", "batch_size", "gradient_accumulation_steps", "mixed_precision",
               "attention", "gradient_checkpointing", "cache_latents", "cache_text_embeddings", "vae_fp32",
               "optimizer", "rank", "target_modules", "train_text_encoder", "max_grad_norm", "sample_prompts",
               "sample_every_steps", "sample_every_epochs")


def estimate(config: TrainConfig) -> Estimate:
    """Predict the GPU memory of one training run of `config` (see the module docstring). An estimate
    of the same knobs on the same model is answered from loradeck.trainer.gpu.estimate_cache."""
    started = time.perf_counter()
    cache_key = estimate_cache.key({k: getattr(config, k) for k in KNOB_FIELDS}) if cache_enabled() else None
    known = estimate_cache.load(cache_key)
    if known is not None:
        return Estimate.from_dict(dict(known, seconds=round(time.perf_counter() - started, 3)))
    result = _traced_estimate(config, started)
    estimate_cache.store(cache_key, result.to_dict())
    return result


def cache_enabled() -> bool:
    return os.environ.get(NO_CACHE_ENV, "") in ("", "0")


def _traced_estimate(config: TrainConfig, started: float) -> Estimate:
    import torch  # the trace needs torch; the cache lookup above does not
    from diffusers.utils import logging as diffusers_logging

    cfg = config
    # The casts of meta modules earn diffusers' "should be kept in float32" warning: noise in a CLI answer.
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        model = model_skeleton.build(cfg.base_model)
        with torch.random.fork_rng(devices=[]):
            step = trace_step(cfg, model, torch.device("meta"))
    finally:
        diffusers_logging.set_verbosity(verbosity)
    allocated = step["peak"] + CUBLAS_WORKSPACE_BYTES
    breakdown = {part: step["split"].get(part, 0) for part in PARTS}
    breakdown["cuBLAS workspace"] = CUBLAS_WORKSPACE_BYTES
    worst = max(allocated, (step["caching_peak"] or 0) + CUBLAS_WORKSPACE_BYTES)
    reserved = int(worst * (1 + ALLOCATOR_FRAGMENTATION)) + ALLOCATOR_SLACK_BYTES
    return Estimate(expected_peak_bytes=allocated, nvidia_smi_bytes=reserved + CUDA_CONTEXT_BYTES,
                    breakdown=breakdown, caching_peak_bytes=step["caching_peak"], reserved_bytes=reserved,
                    context_bytes=CUDA_CONTEXT_BYTES, peak_phase=step["peak_phase"],
                    seconds=round(time.perf_counter() - started, 3),
                    config={k: getattr(cfg, k) for k in KNOB_FIELDS})


def trace_step(cfg: TrainConfig, model, device, *, real_optimizer: bool = False) -> dict[str, Any]:
    """Set up `model` with the trainer's code and trace one steady-state optimizer step on `device`.

    `device` is meta for the estimate; bench/bench_estimate.py passes the CPU with real weights
    (`real_optimizer` then runs torch's AdamW for the state instead of the modelled one).
    Returns {peak, split, peak_phase, caching_peak}.
    """
    import torch  # torch: the estimate runs in a child process; the TUI never loads it
    import torch.nn.functional as F

    # torch: the estimate runs in a child process; the TUI never loads it
    from loradeck.trainer.gpu.memory_trace import FusedAttention, GpuAutocast, StorageTracker

    weight_dtype = getattr(torch, WEIGHT_DTYPES[cfg.mixed_precision])
    vae_dtype = torch.float32 if cfg.vae_fp32 else weight_dtype
    sampling = bool(cfg.sample_prompts) and bool(cfg.sample_every_steps or cfg.sample_every_epochs)
    unet, vae, text_encoder = model.unet, model.vae, model.text_encoder
    sdxl = model.family == model_family.SDXL
    text_encoder_2 = model.text_encoder_2 if sdxl else None
    text_encoders = [te for te in (text_encoder, text_encoder_2) if te is not None]
    # xformers keeps what the flash kernel keeps; its processor needs a CUDA build, so sdpa's is installed.
    attention = "sdpa" if cfg.attention == "xformers" else cfg.attention
    unet_params, te_params = network_setup.prepare_networks(
        cfg, unet, vae, text_encoder, device=device, weight_dtype=weight_dtype, vae_dtype=vae_dtype,
        sampling=sampling, attention=attention, text_encoder_2=text_encoder_2)
    params = unet_params + te_params
    adapter = {id(p) for p in params}
    batch, res = cfg.batch_size, cfg.resolution
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_shape = (batch, vae.config.latent_channels, res // vae_scale, res // vae_scale)
    te_len = text_encoder.config.max_position_embeddings
    attention_mode = FusedAttention() if attention == "sdpa" else None
    autocast = GpuAutocast(weight_dtype, unet) if cfg.mixed_precision != "no" else None

    def weights(*modules):
        for module in modules:
            for t in list(module.parameters()) + list(module.buffers()):
                if id(t) not in adapter:
                    yield t

    def encode(tracker, images: int = batch):
        pixels = torch.empty(images, 3, res, res, device=device)
        with tracker.phase("inputs"), torch.inference_mode():
            pixels = pixels.to(vae_dtype)
        with tracker.phase("activations", "VAE encode"), torch.inference_mode(), _maybe(attention_mode):
            dist = vae.encode(pixels).latent_dist
            mean, std = dist.mean.float(), dist.std.float()
        return mean, std

    def encode_text(ids):
        return text_encoder(ids)[0]

    if sdxl:  # the loop's encoder pair; token ids stand in for the tokenizers (captions do not change memory)
        sdxl_text = sdxl_conditioning.SdxlText([_TokenIds(te.config.max_position_embeddings) for te in text_encoders],
                                               text_encoders, device)
        # The loop builds the time ids on the CPU (sdxl_conditioning.time_ids) and unet_kwargs moves them.
        step_time_ids = sdxl_conditioning.time_ids(
            [SimpleNamespace(path=f"{i}.png", size=(res, res)) for i in range(batch)], {})

    # Caching latents: the VAE and the text encoders are on the GPU, the UNet waits on the CPU (the loop
    # places it afterwards), and the VAE encodes latent_cache.VAE_BATCH images at a time.
    caching_peak = None
    if cfg.cache_latents:
        with StorageTracker(device.type) as tracker:
            tracker.add_existing(weights(vae, *text_encoders), "frozen weights")
            tracker.add_existing(te_params, "adapter weights")
            encode(tracker, latent_cache.VAE_BATCH)
            caching_peak = tracker.peak

    # The optimizer state that exists from the second step on.
    state = []
    optimizer = None
    if real_optimizer:
        optimizer = network_setup.make_optimizer(cfg, unet_params, te_params)
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    else:
        state = optimizer_state(cfg.optimizer, params)

    on_gpu = [unet]
    if not cfg.cache_latents:
        on_gpu.append(vae)
    if not cfg.cache_text_embeddings:
        on_gpu += text_encoders
    with StorageTracker(device.type) as tracker:
        tracker.add_existing(weights(*on_gpu), "frozen weights")
        tracker.add_existing(params, "adapter weights")
        if optimizer is not None:
            tracker.add_existing((t for s in optimizer.state.values() for t in s.values()
                                  if isinstance(t, torch.Tensor)), "optimizer state")
        tracker.add_existing(state, "optimizer state")
        hooks = [p.register_post_accumulate_grad_hook(lambda p: tracker.recategorise(p.grad, "adapter grads"))
                 for p in params]
        if cfg.gradient_accumulation_steps > 1:  # later micro-batches start with the summed gradients
            with tracker.phase("adapter grads"):
                for p in params:
                    p.grad = torch.zeros_like(p)
        try:
            tracker.reset_peak()
            # Latents: cached ones come from the CPU; otherwise the VAE encodes this batch's pixels.
            if cfg.cache_latents:
                with tracker.phase("inputs"):
                    latents = torch.empty(latent_shape, device=device)
            else:
                mean, std = encode(tracker)
                del mean, std  # encode_posterior returns them on the CPU
                with tracker.phase("inputs"):
                    latents = torch.empty(latent_shape, device=device)
            with tracker.phase("inputs"):
                noise = torch.empty(latent_shape, device=device)
                timesteps = torch.zeros(batch, dtype=torch.long, device=device)
            grad_te = cfg.train_text_encoder
            if cfg.cache_text_embeddings:  # the cache's fp32 CPU tensors, moved to the GPU
                with tracker.phase("inputs"):
                    width = sum(te.config.hidden_size for te in text_encoders)
                    hidden = torch.empty(batch, te_len, width, device=device)
                    if sdxl:
                        hidden = hidden, torch.empty(batch, text_encoder_2.config.projection_dim, device=device)
            elif sdxl:
                with tracker.phase("activations", "text encoders"), _maybe(attention_mode), \
                        (torch.enable_grad() if grad_te else torch.no_grad()):
                    hidden = sdxl_text([""] * batch)
            else:
                with tracker.phase("inputs"):
                    ids = torch.zeros(batch, te_len, dtype=torch.long, device=device)
                with tracker.phase("activations", "text encoder"), _maybe(attention_mode), \
                        (torch.enable_grad() if grad_te else torch.no_grad()):
                    hidden = encode_text(ids)
            extra = {}
            if sdxl:
                hidden, pooled = hidden
                with tracker.phase("inputs"):
                    extra = sdxl_conditioning.unet_kwargs(pooled, step_time_ids, weight_dtype)
                del pooled
            with tracker.phase("activations", "UNet forward"):
                noisy = model.noise_scheduler().add_noise(latents, noise, timesteps)
                target = noise
                with _maybe(attention_mode), _maybe(autocast):
                    pred = unet(noisy.to(weight_dtype), timesteps, hidden.to(weight_dtype), **extra).sample
                loss = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3)).mean()
                del pred, noisy
                if cfg.mixed_precision == "fp16":  # the grad scaler scales the loss, then unscales the grads
                    loss = loss * 65536.0
            # Checkpointed segments recompute under the forward's autocast state, as torch.utils.checkpoint
            # restores it; the autograd kernels themselves are not Python functions, so the mode skips them.
            with tracker.phase("backward temporaries", "backward"), _maybe(attention_mode), _maybe(autocast):
                _backward(loss / cfg.gradient_accumulation_steps)
            del loss, target, hidden, latents, noise, extra
            with tracker.phase("backward temporaries", "optimizer step"):
                grads = [p.grad for p in params if p.grad is not None]
                if cfg.mixed_precision == "fp16" and grads:
                    for g in grads:
                        g.mul_(1 / 65536.0)
                if cfg.max_grad_norm and grads:
                    torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                del grads
                if optimizer is not None:
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                else:  # fused AdamW / AdamW8bit update in place: no new memory
                    for p in params:
                        p.grad = None
        finally:
            for h in hooks:
                h.remove()
        return {"peak": tracker.peak, "split": dict(tracker.peak_split), "peak_phase": tracker.peak_label,
                "caching_peak": caching_peak}


def _backward(loss) -> None:
    """loss.backward() with the tracing modes still active: Tensor.backward is itself a torch function,
    and a TorchFunctionMode is switched off while it handles one, so checkpointed segments would
    recompute without them. The autograd engine is entered directly instead."""
    import torch  # torch: the estimate runs in a child process; the TUI never loads it
    from torch.autograd.graph import _engine_run_backward

    _engine_run_backward((loss,), (torch.ones_like(loss),), False, False, (), allow_unreachable=True,
                         accumulate_grad=True)


class _TokenIds:
    """Stands in for a CLIP tokenizer in sdxl_conditioning.SdxlText: (batch, max_length) int64 ids."""

    def __init__(self, max_length: int):
        self.model_max_length = max_length

    def __call__(self, captions, *, max_length: int, **_):
        import torch  # torch: the estimate runs in a child process; the TUI never loads it

        return SimpleNamespace(input_ids=torch.zeros(len(captions), max_length, dtype=torch.long))


def _maybe(mode):
    return mode if mode is not None else contextlib.nullcontext()


def optimizer_state(optimizer: str, params: list) -> list:
    """Meta tensors shaped like the optimizer's per-parameter state (see the module docstring)."""
    import torch  # torch: the estimate runs in a child process; the TUI never loads it

    out = []
    for p in params:
        n = p.numel()
        if optimizer == "adamw8bit" and n >= 4096:
            blocks = math.ceil(n / 256)
            out += [torch.empty(n, dtype=torch.uint8, device=p.device) for _ in range(2)]
            out += [torch.empty(blocks, dtype=torch.float32, device=p.device) for _ in range(2)]
        else:
            out += [torch.empty_like(p, dtype=torch.float32) for _ in range(2)]
            out.append(torch.empty((), dtype=torch.float32, device=p.device))  # fused AdamW's step on the device
    return out


# ------------------------------------------------------------------------------------ fit advice

def knob_steps(cfg: TrainConfig):
    """(flag, changed config) pairs in the trainer's order of cost; each builds on the previous."""
    current = cfg
    if not cfg.cache_latents:
        current = dataclasses.replace(current, cache_latents=True)
        yield "--cache-latents", current
    if not cfg.cache_text_embeddings and not cfg.train_text_encoder and not cfg.shuffle_caption \
            and not cfg.caption_dropout_rate:
        current = dataclasses.replace(current, cache_text_embeddings=True)
        yield "--cache-text-embeddings", current
    if not cfg.gradient_checkpointing:
        current = dataclasses.replace(current, gradient_checkpointing=True)
        yield "--gradient-checkpointing", current
    if cfg.optimizer == "adamw":
        current = dataclasses.replace(current, optimizer="adamw8bit")
        yield "--optimizer adamw8bit", current
    while current.batch_size > 1:
        batch = current.batch_size // 2
        accum = current.gradient_accumulation_steps * current.batch_size // batch
        current = dataclasses.replace(current, batch_size=batch, gradient_accumulation_steps=accum)
        yield f"--batch-size {batch} --grad-accum {accum}", current
    while current.resolution > 256:
        current = dataclasses.replace(current, resolution=max(256, current.resolution - 128))
        yield f"--resolution {current.resolution}", current


def fit_advice(cfg: TrainConfig, free_bytes: int, *, current: Estimate | None = None) -> Advice | None:
    """The cheapest knobs that make the run fit in `free_bytes`; None if it fits already.

    Advice.changes is empty (and .estimate the best reached) when no knob makes it fit."""
    best = current or estimate(cfg)
    if best.nvidia_smi_bytes <= free_bytes:
        return None
    changes, best_cfg = [], cfg
    for flag, changed in knob_steps(cfg):
        changes.append(flag)
        best_cfg, best = changed, estimate(changed)
        if best.nvidia_smi_bytes <= free_bytes:
            return Advice(changes, best_cfg, best)
    return Advice([], best_cfg, best)


def gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GiB:.2f} GiB"
