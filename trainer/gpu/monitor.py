"""GPU monitoring through NVML (`nvidia-ml-py`, imported as `pynvml`), as nvitop and gpustat do it.

Every NVML call goes through one query helper that answers None on any NVML error, so a field a
driver does not support (temperature on some cloud GPUs, per-process memory in a container) is
N/A, never a crash. No NVML library or no GPU means zero devices. Slow, fixed facts (name, total
memory) are read once per device; fast ones (used memory, utilisation, temperature, processes) are
polled. The trainer runs `start_sampler` to record `gpu` events about once a second, so the VRAM
history survives re-attaching a monitor; the TUI may call `query_devices` for a snapshot.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any, Callable

from loradeck.trainer import process_info

# Why `proc_mem` can be None while the device is visible: NVML reports host PIDs.
PROC_MEM_HIDDEN = ("NVML does not list this process on the GPU (inside a container NVML reports host"
                   " process ids); device memory used is shown instead")


class NvmlUnavailable(Exception):
    """NVML cannot be used here; the message says why (for the `gpu` event's `reason`)."""


def _text(value: Any) -> Any:
    return value.decode(errors="replace") if isinstance(value, bytes) else value


@dataclass
class _Device:
    index: int                # NVML index (what nvidia-smi shows)
    handle: Any
    name: str | None          # cached: fixed for the device's life
    uuid: str | None
    mem_total: int | None


class Nvml:
    """An initialised NVML session and the devices this process can use."""

    def __init__(self) -> None:
        try:
            import pynvml  # pynvml: only when GPUs are queried; no NVML is no error (tests put a fake in sys.modules)
        except ImportError:
            raise NvmlUnavailable("nvidia-ml-py (pynvml) is not installed") from None
        self.nvml = pynvml
        try:
            pynvml.nvmlInit()
        except Exception as e:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ... or a broken binding
            raise NvmlUnavailable(f"NVML is not available ({_text(str(e)) or type(e).__name__});"
                                  " no NVIDIA driver or GPU on this machine") from None
        self._closed = False
        self.devices = self._visible_devices()

    def query(self, fn_name: str, *args: Any) -> Any:
        """Call pynvml.<fn_name>(*args); None on any NVML (or binding) error."""
        fn = getattr(self.nvml, fn_name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except Exception:
            return None

    def _visible_devices(self) -> list[_Device]:
        """The devices CUDA will use: CUDA_VISIBLE_DEVICES (indices or UUIDs) when set, else all."""
        count = self.query("nvmlDeviceGetCount") or 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        handles: list[tuple[int, Any]] = []
        if visible is None or visible.strip() == "":
            wanted = None if visible is None else []
        else:
            wanted = [v.strip() for v in visible.split(",") if v.strip()]
        if wanted is None:
            for i in range(count):
                handle = self.query("nvmlDeviceGetHandleByIndex", i)
                if handle is not None:
                    handles.append((i, handle))
        else:
            for item in wanted:
                if item.isdigit():
                    index = int(item)
                    handle = self.query("nvmlDeviceGetHandleByIndex", index) if index < count else None
                else:
                    handle = self.query("nvmlDeviceGetHandleByUUID", item)
                    index = self.query("nvmlDeviceGetIndex", handle) if handle is not None else None
                if handle is None:
                    break  # CUDA stops at the first invalid entry too
                handles.append((index if isinstance(index, int) else len(handles), handle))
        devices = []
        for index, handle in handles:
            memory = self.query("nvmlDeviceGetMemoryInfo", handle)
            devices.append(_Device(index=index, handle=handle,
                                   name=_text(self.query("nvmlDeviceGetName", handle)),
                                   uuid=_text(self.query("nvmlDeviceGetUUID", handle)),
                                   mem_total=getattr(memory, "total", None)))
        return devices

    def _process_memory(self, handle: Any, pids: set[int]) -> int | None:
        """Memory our processes hold on the device, None where NVML does not show them."""
        procs = self.query("nvmlDeviceGetComputeRunningProcesses", handle)
        if procs is None:
            return None
        used = [getattr(p, "usedGpuMemory", None) for p in procs if getattr(p, "pid", None) in pids]
        known = [u for u in used if isinstance(u, int)]
        return sum(known) if known else None

    def sample(self, device: _Device, pids: set[int] | None = None) -> dict[str, Any]:
        """The fields of one `gpu` event for `device` (None where NVML has no answer)."""
        memory = self.query("nvmlDeviceGetMemoryInfo", device.handle)
        rates = self.query("nvmlDeviceGetUtilizationRates", device.handle)
        temp_sensor = getattr(self.nvml, "NVML_TEMPERATURE_GPU", 0)
        mem_total = device.mem_total if device.mem_total is not None else getattr(memory, "total", None)
        fields: dict[str, Any] = {
            "available": True, "index": device.index, "name": device.name, "uuid": device.uuid,
            "mem_used": getattr(memory, "used", None), "mem_total": mem_total,
            "util": getattr(rates, "gpu", None), "mem_util": getattr(rates, "memory", None),
            "temperature": self.query("nvmlDeviceGetTemperature", device.handle, temp_sensor),
        }
        if pids is not None:
            fields["proc_mem"] = self._process_memory(device.handle, pids)
            if fields["proc_mem"] is None:
                fields["proc_mem_note"] = PROC_MEM_HIDDEN
        return fields

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.query("nvmlShutdown")


class _GroupPids(set):
    """`pid`, the others of its process group, and the other ranks of its run: processes whose command
    line runs the same trainer module on the same run folder (torch's launcher, which accelerate uses
    for several GPUs, puts each rank in a session of its own). Looked up per NVML-listed pid; a host
    pid unknown in our namespace is not ours."""

    def __init__(self, pid: int):
        super().__init__([pid])
        try:
            self._pgid = os.getpgid(pid)
        except OSError:
            self._pgid = None
        self._run = _trainer_run_of(pid)

    def __contains__(self, other: object) -> bool:
        if set.__contains__(self, other):
            return True
        if not isinstance(other, int):
            return False
        try:
            if self._pgid is not None and os.getpgid(other) == self._pgid:
                return True
        except OSError:
            return False
        return self._run is not None and _trainer_run_of(other) == self._run


TRAINER_MODULE = "loradeck.trainer.train.process"


def _trainer_run_of(pid: int) -> str | None:
    """The run folder a trainer process trains (`... -m loradeck.trainer.train.process RUN_DIR`), else None."""
    return process_info.module_arg(pid, TRAINER_MODULE)


def query_devices(pid: int | None = None) -> list[dict[str, Any]]:
    """A snapshot of each visible GPU (the `gpu` event fields); [] with no NVML or no GPU.

    With `pid`, `proc_mem` is that process's memory on each device (None where NVML can't see it).
    """
    try:
        nvml = Nvml()
    except NvmlUnavailable:
        return []
    try:
        pids = {pid} if pid is not None else None
        return [nvml.sample(d, pids) for d in nvml.devices]
    finally:
        nvml.close()


def unavailable_reason() -> str | None:
    """Why there is nothing to monitor (None when at least one GPU is visible)."""
    try:
        nvml = Nvml()
    except NvmlUnavailable as e:
        return str(e)
    try:
        return None if nvml.devices else "NVML sees no usable NVIDIA GPU (check CUDA_VISIBLE_DEVICES)"
    finally:
        nvml.close()


class Sampler:
    """A daemon thread that emits a `gpu` event per visible device every `interval` seconds."""

    def __init__(self, emit: Callable[..., Any], interval: float = 1.0, pid: int | None = None):
        self._emit = emit
        self.interval = interval
        self.pid = os.getpid() if pid is None else pid
        self._stop = threading.Event()
        self.samples = 0
        self.reason: str | None = None  # set when NVML could not be used
        self._thread = threading.Thread(target=self._run, name="gpu-sampler", daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            nvml = Nvml()
        except NvmlUnavailable as e:
            self._unavailable(str(e))
            return
        try:
            if not nvml.devices:
                self._unavailable("NVML sees no usable NVIDIA GPU (check CUDA_VISIBLE_DEVICES)")
                return
            pids = _GroupPids(self.pid)
            while not self._stop.is_set():
                for device in nvml.devices:
                    self._safe_emit(**nvml.sample(device, pids))
                self.samples += 1
                self._stop.wait(self.interval)
        finally:
            nvml.close()

    def _unavailable(self, reason: str) -> None:
        self.reason = reason
        self._safe_emit(available=False, reason=reason)

    def _safe_emit(self, **fields: Any) -> None:
        try:
            self._emit("gpu", **fields)
        except Exception:
            pass  # monitoring must never take the training run down (e.g. a full disk)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)


def start_sampler(writer: Any, interval: float = 1.0, pid: int | None = None) -> Sampler:
    """Start sampling into `writer` (an EventWriter, or any callable(type, **fields)); `.stop()` ends it.

    `pid` (default: this process) selects whose memory is reported as `proc_mem`: that process and
    the others of its process group (the ranks of a multi-GPU run).
    """
    emit = writer.emit if hasattr(writer, "emit") else writer
    return Sampler(emit, interval=interval, pid=pid).start()
