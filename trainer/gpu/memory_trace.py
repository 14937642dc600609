"""A tensor-lifetime tracker: which bytes are alive at the peak of some torch code, by category.

Used by loradeck.trainer.gpu.vram_estimate to trace one training step on the `meta` device (shapes and dtypes,
no data), and by bench/bench_estimate.py to trace the same step on real CPU tensors.

`StorageTracker` is a TorchDispatchMode: every storage an op creates is counted once (views and
in-place results share a storage) under the tracker's current `category`, and uncounted when its
last reference dies (a weakref callback). Tensors that exist before tracking (weights, buffers)
are added with `add_existing`. The peak is kept with the per-category split at that moment.

Byte counts are rounded up per storage to the CUDA caching allocator's 512-byte block size, since
`torch.cuda.max_memory_allocated` counts rounded blocks.

Two CUDA behaviours a CPU trace would not show are modelled here, explicitly:

- `GpuAutocast`: `torch.autocast("cuda", fp16|bf16)` as a TorchFunctionMode: matmul-like ops
  (linear, conv, matmul, bmm, baddbmm, addmm, attention) take half inputs; the ops CUDA autocast
  runs in fp32 (group_norm, layer_norm, softmax, mse_loss, ...) take fp32 inputs. The casts happen
  where the real autocast makes them, so the traced activations have the GPU run's dtypes.
- `FusedAttention`: with `attention = sdpa` (flash / memory-efficient kernels) or `xformers`, the
  backward keeps q, k, v, the output and a per-row fp32 log-sum-exp, never the L x L attention
  matrix. `scaled_dot_product_attention` is routed to the flash-attention operator, which saves
  exactly that. With `attention = eager` nothing is changed: the traced baddbmm/softmax keep the
  attention matrix as the GPU's eager path does.
"""

from __future__ import annotations

import contextlib
import weakref
from collections import defaultdict
from typing import Any, Iterable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten

BLOCK = 512  # CUDA caching allocator: every allocation is a multiple of 512 bytes


def rounded(nbytes: int) -> int:
    return -(-nbytes // BLOCK) * BLOCK if nbytes else 0


class StorageTracker(TorchDispatchMode):
    """Live bytes by category, and the peak with its split. Use as a context manager."""

    def __init__(self, device_type: str | None = None):
        super().__init__()
        self.device_type = device_type  # count only storages on this device type (None: all)
        # On meta every result depends on its inputs' shapes alone: replay known results (see MetaResults).
        self.results = META_RESULTS if device_type == "meta" else None
        self.category = "activations"
        self.live: dict[int, tuple[weakref.ref, int, str]] = {}
        self.by_category: dict[str, int] = defaultdict(int)
        self.current = 0
        self.peak = 0
        self.peak_split: dict[str, int] = {}
        self.peak_label = ""
        self.label = ""

    # -- counting ------------------------------------------------------------------------------
    def _add(self, t: torch.Tensor, category: str) -> None:
        if self.device_type and t.device.type != self.device_type:
            return
        st = t.untyped_storage()
        key = id(st)
        if key in self.live and self.live[key][0]() is st:
            return
        n = rounded(st.nbytes())
        self.live[key] = (weakref.ref(st, lambda _ref, k=key: self._free(k, _ref)), n, category)
        self.by_category[category] += n
        self.current += n
        if self.current > self.peak:
            self.peak = self.current
            self.peak_split = dict(self.by_category)
            self.peak_label = self.label

    def _free(self, key: int, ref: weakref.ref) -> None:
        entry = self.live.get(key)
        if entry is None or entry[0] is not ref:
            return
        del self.live[key]
        self.by_category[entry[2]] -= entry[1]
        self.current -= entry[1]

    def add_existing(self, tensors: Iterable[torch.Tensor], category: str) -> None:
        """Count tensors made before tracking began (weights, buffers, cached inputs)."""
        for t in tensors:
            if t is not None:
                self._add(t, category)

    def recategorise(self, t: torch.Tensor, category: str) -> None:
        """Move a live tensor's bytes to another category (a gradient leaving 'backward' for 'grads')."""
        entry = self.live.get(id(t.untyped_storage()))
        if entry is None or entry[2] == category:
            return
        key = id(t.untyped_storage())
        self.by_category[entry[2]] -= entry[1]
        self.by_category[category] += entry[1]
        self.live[key] = (entry[0], entry[1], category)

    def live_bytes(self, category: str) -> int:
        return self.by_category.get(category, 0)

    @contextlib.contextmanager
    def phase(self, category: str, label: str | None = None):
        """New storages made inside go to `category`; `label` names the phase the peak fell in."""
        before = (self.category, self.label)
        self.category = category
        if label is not None:
            self.label = label
        try:
            yield self
        finally:
            self.category, self.label = before

    def reset_peak(self) -> None:
        self.peak = self.current
        self.peak_split = dict(self.by_category)
        self.peak_label = self.label

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = self.results.call(func, args, kwargs) if self.results is not None else func(*args, **kwargs)
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._add(t, self.category)
        return out


class MetaResults:
    """Meta kernels, remembered: an op that makes new tensors (no view, no in-place write) gives
    results of the same shapes, strides and dtypes whenever its inputs have the same ones, so the
    second call makes empty meta tensors of those specs instead of running the kernel again.

    Most meta kernels are torch's Python reference implementations, and a training step repeats
    the same ops on the same shapes (the transformer blocks of a level, a checkpointed segment's
    recompute, the backward of each repeat), so this is most of an estimate's time."""

    def __init__(self):
        self.known: dict[tuple, tuple] = {}
        self.fresh: dict[Any, bool] = {}  # op -> makes only new storages (no aliasing, no mutation)
        self.hits = self.misses = 0

    def call(self, func, args, kwargs):
        if not self._makes_fresh(func):
            return func(*args, **kwargs)
        try:
            key = (func, _spec(args), _spec(kwargs))
            hash(key)
        except TypeError:  # an argument without a spec (an opaque object): run the kernel
            return func(*args, **kwargs)
        known = self.known.get(key)
        if known is not None:
            self.hits += 1
            return _replay(known)
        self.misses += 1
        out = func(*args, **kwargs)
        flat, tree = tree_flatten(out)
        if _shares_storage(flat, (args, kwargs)):  # a view its schema does not declare (_unsafe_view)
            self.fresh[func] = False
        elif all(not isinstance(t, torch.Tensor) or _plain_meta(t) for t in flat):
            self.known[key] = ([_result_spec(t) for t in flat], tree)
        return out

    def _makes_fresh(self, func) -> bool:
        fresh = self.fresh.get(func)
        if fresh is None:
            schema = func._schema
            fresh = not schema.is_mutable and all(
                a.alias_info is None for a in list(schema.arguments) + list(schema.returns))
            self.fresh[func] = fresh
        return fresh


def _spec(value: Any):
    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), value.stride(), value.dtype, value.device.type, value.storage_offset())
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, *(_spec(v) for v in value))
    if isinstance(value, dict):
        return ("D", *((k, _spec(v)) for k, v in sorted(value.items())))
    return value


def _shares_storage(outputs: list, inputs: Any) -> bool:
    held = {t.untyped_storage()._cdata for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)}
    return any(isinstance(t, torch.Tensor) and t.untyped_storage()._cdata in held for t in outputs)


def _plain_meta(t: torch.Tensor) -> bool:
    """A fresh meta tensor that empty_strided re-creates exactly (storage size included)."""
    if type(t) is not torch.Tensor or t.device.type != "meta" or t.storage_offset() != 0:
        return False
    probe = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    return probe.untyped_storage().nbytes() == t.untyped_storage().nbytes()


def _result_spec(value: Any):
    if isinstance(value, torch.Tensor):
        return ("T", tuple(value.shape), value.stride(), value.dtype)
    return ("V", value)


def _replay(known: tuple):
    specs, tree = known
    flat = [torch.empty_strided(s[1], s[2], dtype=s[3], device="meta") if s[0] == "T" else s[1] for s in specs]
    return tree_unflatten(flat, tree)


META_RESULTS = MetaResults()  # one per process: the caching pass, the step and every further estimate share it


# ------------------------------------------------------------------------------ CUDA behaviours

_F = torch.nn.functional
_HALF_OPS = {_F.linear, _F.conv1d, _F.conv2d, torch.matmul, torch.bmm, torch.baddbmm, torch.addmm, torch.mm,
             torch.Tensor.matmul, torch.Tensor.__matmul__, _F.scaled_dot_product_attention}
_FP32_OPS = {_F.group_norm, _F.layer_norm, _F.softmax, torch.softmax, torch.Tensor.softmax, _F.mse_loss,
             _F.log_softmax}


class GpuAutocast(TorchFunctionMode):
    """CUDA autocast's casting rules, on any device, inside the modules of `scope` (see the module
    docstring). The loop autocasts only the UNet call; scoping by module (forward hooks) also holds
    when a checkpointed block recomputes during backward, as torch.utils.checkpoint restores the
    autocast state of the forward."""

    def __init__(self, dtype: torch.dtype, scope: torch.nn.Module):
        super().__init__()
        self.dtype = dtype
        self.scope = scope
        self.depth = 0
        self._hooks: list = []

    def __enter__(self):
        def enter(*_):
            self.depth += 1

        def leave(*_):
            self.depth -= 1

        for module in self.scope.modules():
            self._hooks.append(module.register_forward_pre_hook(enter))
            self._hooks.append(module.register_forward_hook(leave, always_call=True))
        return super().__enter__()

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
        return super().__exit__(*exc)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.depth > 0:
            if func in _HALF_OPS:
                args, kwargs = _cast_floats(args, self.dtype), _cast_floats(kwargs, self.dtype)
            elif func in _FP32_OPS:
                args, kwargs = _cast_floats(args, torch.float32), _cast_floats(kwargs, torch.float32)
        return func(*args, **kwargs)


def _cast_floats(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() and value.dtype != dtype else value
    if isinstance(value, (list, tuple)):
        return type(value)(_cast_floats(v, dtype) for v in value)
    if isinstance(value, dict):
        return {k: _cast_floats(v, dtype) for k, v in value.items()}
    return value


class FusedAttention(TorchFunctionMode):
    """`scaled_dot_product_attention` through the flash-attention operator: saves q, k, v, out, lse."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _F.scaled_dot_product_attention:
            q, k, v = args[:3]
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            if mask is None and q.dim() == 4:
                return _Flash.apply(q, k, v, kwargs.get("scale"))
        return func(*args, **kwargs)


class _Flash(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, scale):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, False, scale=scale)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_out.contiguous(), q, k, v, out, lse, 0.0, False, scale=ctx.scale)
        return dq, dk, dv, None
