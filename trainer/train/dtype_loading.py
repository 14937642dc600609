"""Frozen weights straight into the run's dtype: a diffusers/transformers component is built on the
`meta` device and filled from its .safetensors file one tensor at a time, each cast as it is read.

`from_pretrained` first materialises the whole fp32 state dict (through a memory map whose touched
pages count in the process's RSS) and casts afterwards, so a bf16 run of SD1.5 peaked above an fp32
one. Here the file is read with plain reads (page cache, not mapped), so the process holds at most one
fp32 tensor beside the half-precision weights it keeps. Anything unexpected (another file layout, a key
the class does not have, a parameter left on `meta`) falls back to `from_pretrained(torch_dtype=...)`,
which gives the same values with a higher peak.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "model.safetensors")
MAX_HEADER_BYTES = 100 * 1024 * 1024


def load_component(cls, folder: Path, dtype, *, transformers_model: bool = False) -> Any:
    """`cls` from the diffusers/transformers folder `folder`, its floating-point weights in `dtype`."""
    try:
        model = _streamed(cls, folder, dtype, transformers_model)
    except (OSError, ValueError, KeyError, RuntimeError, struct.error):
        model = None
    if model is None:  # not a layout this reader knows: the library's loader, cast at load
        dtype_arg = {"dtype": dtype} if transformers_model else {"torch_dtype": dtype}
        return cls.from_pretrained(folder, use_safetensors=True, **dtype_arg).eval()
    return model


def read_tensors(path: Path, dtype) -> Iterator[tuple[str, Any]]:
    """(name, tensor) from a .safetensors file in file order, floating-point tensors cast to `dtype`,
    each read on its own (no memory map)."""
    import torch  # off the import path of this module's light callers

    dtypes = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}
    with open(path, "rb") as fh:
        size = struct.unpack("<Q", fh.read(8))[0]
        if size > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: header of {size} bytes")
        header = json.loads(fh.read(size))
        base = 8 + size
        entries = sorted((info["data_offsets"][0], name, info) for name, info in header.items()
                         if name != "__metadata__")
        for start, name, info in entries:
            end = info["data_offsets"][1]
            stored = dtypes[info["dtype"]]
            if end == start:
                yield name, torch.empty(info["shape"], dtype=dtype if stored.is_floating_point else stored)
                continue
            fh.seek(base + start)
            buffer = bytearray(end - start)
            if fh.readinto(buffer) != len(buffer):
                raise ValueError(f"{path}: truncated at {name}")
            tensor = torch.frombuffer(buffer, dtype=stored).reshape(info["shape"])
            yield name, tensor.to(dtype) if stored.is_floating_point and stored != dtype else tensor


def _streamed(cls, folder: Path, dtype, transformers_model: bool):
    from accelerate import init_empty_weights  # with torch: only a training process gets here

    weights = next((folder / name for name in WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None or getattr(cls, "_keep_in_fp32_modules", None):  # sharded, or mixed dtypes by design
        return None
    with init_empty_weights():  # parameters on meta, buffers real (position ids, ...)
        if transformers_model:
            model = cls._from_config(cls.config_class.from_pretrained(folder))
        else:
            model = cls.from_config(cls.load_config(folder))
            model.register_to_config(_name_or_path=folder)  # as from_pretrained records it
    state = dict(read_tensors(weights, dtype))
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if unexpected or any(p.is_meta for p in model.parameters()) or any(b.is_meta for b in model.buffers()):
        return None
    for module in model.modules():  # floating buffers into the run's dtype too, as from_pretrained does
        for key, buffer in module._buffers.items():
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != dtype:
                module._buffers[key] = buffer.to(dtype)
    model.eval()
    return model
