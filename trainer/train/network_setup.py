"""Setting the networks up for training, shared by the trainer (loradeck.trainer.train.loop) and the memory
estimate (loradeck.trainer.gpu.vram_estimate, which runs this same code on meta-device models): freeze,
attention processor, dtype and placement, the LoRA adapters, checkpointing, and the optimizer.
"""

from __future__ import annotations

from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.errors import ConfigError
from loradeck.trainer.train import lora_network, optional_packages


def prepare_networks(cfg: TrainConfig, unet, vae, text_encoder, *, device, weight_dtype, vae_dtype, sampling: bool,
                     attention: str | None = None, text_encoder_2=None,
                     unet_waits: bool = False) -> tuple[list, list]:
    """Freeze, attention, dtype and placement, the LoRA adapters and checkpointing: step 3 of the loop.

    Returns (unet adapter params, text-encoder adapter params). `text_encoder_2` is SDXL's second
    encoder (None for SD 1.x). loradeck.trainer.gpu.vram_estimate runs this same code on meta-device models
    (`device="meta"`, with `attention` naming the processor to install). With `unet_waits` the UNet (and its
    adapters) stay on the CPU in their dtype: the loop caches latents first and then calls `place_unet`.
    """
    import torch  # heavy: the estimate's callers and the CLI import this module without training

    if not sampling:  # nothing will decode: only the VAE encoder is needed (SD1.5: ~200 MB less)
        vae.decoder = vae.post_quant_conv = None
    text_encoders = [te for te in (text_encoder, text_encoder_2) if te is not None]
    for module in (unet, vae, *text_encoders):
        module.requires_grad_(False)
    set_attention(attention or cfg.attention, unet, vae)
    for module, dtype in ((unet, weight_dtype), (vae, vae_dtype), *((te, weight_dtype) for te in text_encoders)):
        where = None if unet_waits and module is unet else device
        if module.dtype == dtype:  # a cast to the dtype it already has only earns a diffusers warning
            if where is not None:
                module.to(where)
        else:
            module.to(where, dtype=dtype)
    torch.manual_seed(cfg.seed)  # the adapter's initial weights come from the run's seed
    unet_params = lora_network.add_unet_lora(unet, rank=cfg.rank, alpha=cfg.alpha, targets=cfg.target_modules)
    te_params = []
    if cfg.train_text_encoder:
        for k, te in enumerate(text_encoders):  # SDXL reads te1 at its penultimate layer: its last never trains
            layers = range(te.config.num_hidden_layers - 1) if text_encoder_2 is not None and k == 0 else None
            te_params += lora_network.add_text_encoder_lora(te, rank=cfg.rank, alpha=cfg.alpha,
                                                            targets=cfg.target_modules, layers=layers)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        if cfg.train_text_encoder:
            for te in text_encoders:
                te.gradient_checkpointing_enable()
    unet.train()
    for te in text_encoders:
        te.train(cfg.train_text_encoder)
    return unet_params, te_params


def place_unet(unet, device) -> None:
    """The waiting UNet onto the device, adapters included (its parameters stay the same objects, so the
    adapter parameter lists still name them)."""
    unet.to(device)


def set_attention(kind: str, unet, vae) -> None:
    """sdpa -> AttnProcessor2_0, eager -> AttnProcessor, xformers -> the xformers kernels."""
    if kind == "xformers":
        try:
            import xformers  # noqa: F401  (xformers: only when training runs, not when this module is imported)
        except ImportError:
            raise ConfigError("attention xformers: the xformers package is not installed",
                              hint="pip install xformers (CUDA builds only), or use --attention sdpa") from None
        unet.enable_xformers_memory_efficient_attention()
        vae.enable_xformers_memory_efficient_attention()
        return
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0  # heavy

    processor = AttnProcessor2_0 if kind == "sdpa" else AttnProcessor
    unet.set_attn_processor(processor())
    vae.set_attn_processor(processor())


def make_optimizer(cfg: TrainConfig, unet_params: list, te_params: list):
    groups = [{"params": unet_params, "lr": cfg.learning_rate}]
    if te_params:
        groups.append({"params": te_params, "lr": cfg.text_encoder_lr or cfg.learning_rate})
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb  # bitsandbytes: only when training runs, not when this module is imported
        except ImportError:
            raise optional_packages.missing_bitsandbytes() from None  # the one refusal, naming the extra
        return bnb.optim.AdamW8bit(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    import torch  # heavy: see prepare_networks

    # The fused kernel: one pass over all adapter tensors per step, no per-tensor Python loop (the
    # default on the CPU) and no temporary copies of every parameter (foreach, the default on CUDA).
    params = unet_params + te_params
    fused = bool(params) and all(p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused or None)
