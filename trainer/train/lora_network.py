"""The LoRA network: peft adapters on the UNet (and optionally the CLIP text encoder).

Targets, by module-name suffix:
    attention   to_q/to_k/to_v/to_out.0 in every UNet attention block (the diffusers example's set)
    kohya       attention + feed-forward (ff.net.0.proj, ff.net.2) + proj_in/proj_out of each
                transformer block: the modules kohya's networks.lora trains for SD1.x
Text encoder: q/k/v/out_proj (attention) plus fc1/fc2 (kohya).

The adapter weights are always fp32, whatever the frozen weights' dtype, so fp16 training keeps
full-precision updates (the grad scaler handles the fp16 activations).
"""

from __future__ import annotations

from typing import Any

ADAPTER = "default"

UNET_TARGETS = {
    "attention": ["to_q", "to_k", "to_v", "to_out.0"],
    "kohya": ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"],
}
TEXT_ENCODER_TARGETS = {
    "attention": ["q_proj", "k_proj", "v_proj", "out_proj"],
    "kohya": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
}


def lora_config(rank: int, alpha: float, targets: list[str]):
    from peft import LoraConfig  # peft: only when training runs, not when this module is imported

    # Gaussian down (std 1/rank), zero up, as in diffusers' LoRA example: the adapter starts as a no-op,
    # and the larger down weights than kohya's kaiming-uniform let the up weights learn faster at a given
    # LR (bench/bench_train.py --learning measures it against that recipe).
    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights="gaussian")


def add_unet_lora(unet, *, rank: int, alpha: float, targets: str) -> list:
    """Attach the adapter to `unet` (frozen otherwise); returns its trainable parameters (fp32)."""
    unet.requires_grad_(False)
    unet.add_adapter(lora_config(rank, alpha, UNET_TARGETS[targets]), adapter_name=ADAPTER)
    return _fp32_trainable(unet)


def add_text_encoder_lora(text_encoder, *, rank: int, alpha: float, targets: str, layers=None) -> list:
    """`layers`: the encoder layers to adapt (None: all). A layer whose output the UNet never sees
    (SDXL's first encoder is read at its penultimate layer) gets no adapter: it would never train."""
    from peft import inject_adapter_in_model  # peft: only when training runs, not when this module is imported

    text_encoder.requires_grad_(False)
    names = TEXT_ENCODER_TARGETS[targets]
    if layers is not None:
        names = [n for n, _ in text_encoder.named_modules() if n.split(".")[-1] in names
                 and ".layers." in n and int(n.split(".layers.")[1].split(".")[0]) in layers]
    # peft directly: transformers' own add_adapter may demand a newer peft than diffusers does.
    config = lora_config(rank, alpha, names)
    inject_adapter_in_model(config, text_encoder, adapter_name=ADAPTER)
    text_encoder.peft_config = {ADAPTER: config}
    return _fp32_trainable(text_encoder)


def _fp32_trainable(module) -> list:
    import torch  # torch: only when training runs, not when this module is imported

    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.data = p.data.to(torch.float32)
    return params


def lora_state_dict(module) -> dict[str, Any]:
    """The adapter's weights, peft naming (`...to_q.lora_A.weight`), detached on the CPU in fp32."""
    from peft import get_peft_model_state_dict  # peft: only when training runs, not when this module is imported

    state = get_peft_model_state_dict(module, adapter_name=ADAPTER)
    return {k: v.detach().float().cpu().contiguous() for k, v in state.items()}


def load_lora_state_dict(module, state: dict[str, Any]) -> None:
    """Restore adapter weights saved by `lora_state_dict` (strict: every adapter weight must be there)."""
    from peft import set_peft_model_state_dict  # peft: only when training runs, not when this module is imported

    result = set_peft_model_state_dict(module, state, adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(f"state does not match the network: unexpected {unexpected[:3]}")


def count_modules(module) -> int:
    """How many modules carry the adapter (for the run_started event)."""
    return sum(1 for name, m in module.named_modules() if hasattr(m, "lora_A") and ADAPTER in getattr(m, "lora_A", {}))


# SDXL's second text encoder shares the run's one te state file, its keys under this prefix.
TE2_PREFIX = "text_encoder_2."


def text_encoders_state_dict(text_encoder, text_encoder_2=None) -> dict[str, Any]:
    """The text-encoder adapters' weights: te1 as `lora_state_dict`, te2 (SDXL) under TE2_PREFIX."""
    state = lora_state_dict(text_encoder)
    if text_encoder_2 is not None:
        state.update({TE2_PREFIX + k: v for k, v in lora_state_dict(text_encoder_2).items()})
    return state


def load_text_encoders_state_dict(text_encoder, text_encoder_2, state: dict[str, Any]) -> None:
    load_lora_state_dict(text_encoder, {k: v for k, v in state.items() if not k.startswith(TE2_PREFIX)})
    if text_encoder_2 is not None:
        second = {k[len(TE2_PREFIX):]: v for k, v in state.items() if k.startswith(TE2_PREFIX)}
        if not second:
            raise ValueError("state has no adapter for the second text encoder")
        load_lora_state_dict(text_encoder_2, second)
