"""Who is on which GPU: every process on each visible GPU with its owner, command and memory, and
each GPU's free memory; and the GPU a run should go to (`--gpu INDEX|auto`).

NVML lists the processes (compute and graphics) with their memory; psutil (loradeck.trainer.process_info)
names their owner and command. A process NVML lists but that is not in our pid namespace (a
container) shows as `?`. With no NVML or no GPU, `snapshot` has no GPUs and a `reason`, said once.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import asdict, dataclass, field
from typing import Any, Container, Iterator

from loradeck.trainer import process_info
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.gpu import monitor as gpu_monitor
from loradeck.trainer.gpu import run_memory


@dataclass
class GpuProcess:
    pid: int
    user: str | None
    command: str | None
    memory: int | None        # bytes NVML says it holds; None where NVML cannot say
    kind: str                 # compute | graphics | compute+graphics
    ours: bool = False        # one of the ranks of the run asked about


@dataclass
class Gpu:
    index: int
    name: str | None
    uuid: str | None
    mem_total: int | None
    mem_used: int | None
    mem_free: int | None
    processes: list[GpuProcess] = field(default_factory=list)

    @property
    def cuda_visible(self) -> str:
        """What CUDA_VISIBLE_DEVICES must hold to give a child this GPU (the UUID: unambiguous
        whatever CUDA's device order)."""
        return self.uuid or str(self.index)


@dataclass
class GpuReport:
    gpus: list[Gpu]
    reason: str | None        # why there are none (no NVML, no GPU)

    def to_dict(self) -> dict[str, Any]:
        return {"available": bool(self.gpus), "reason": self.reason, "gpus": [asdict(g) for g in self.gpus]}


def _processes(nvml: gpu_monitor.Nvml, handle: Any, ours: Container[int]) -> list[GpuProcess]:
    found: dict[int, GpuProcess] = {}
    for kind, fn in (("compute", "nvmlDeviceGetComputeRunningProcesses"),
                     ("graphics", "nvmlDeviceGetGraphicsRunningProcesses")):
        for p in nvml.query(fn, handle) or []:
            pid = getattr(p, "pid", None)
            if not isinstance(pid, int):
                continue
            memory = getattr(p, "usedGpuMemory", None)
            memory = memory if isinstance(memory, int) and memory >= 0 else None
            if pid in found:  # a process with both contexts: one row
                found[pid].kind = "compute+graphics"
                found[pid].memory = max(found[pid].memory or 0, memory or 0) or found[pid].memory
                continue
            found[pid] = GpuProcess(pid=pid, user=process_info.user(pid), command=process_info.command(pid),
                                    memory=memory, kind=kind, ours=pid in ours)
    return sorted(found.values(), key=lambda p: -(p.memory or 0))


def snapshot(ours: Container[int] = ()) -> GpuReport:
    """Every visible GPU now, with its processes; `ours` marks the processes of one run."""
    try:
        nvml = gpu_monitor.Nvml()
    except gpu_monitor.NvmlUnavailable as e:
        return GpuReport([], str(e))
    try:
        if not nvml.devices:
            return GpuReport([], "NVML sees no usable NVIDIA GPU (check CUDA_VISIBLE_DEVICES)")
        gpus = []
        for d in nvml.devices:
            memory = nvml.query("nvmlDeviceGetMemoryInfo", d.handle)
            total = d.mem_total if d.mem_total is not None else getattr(memory, "total", None)
            used = getattr(memory, "used", None)
            free = getattr(memory, "free", None)
            if not isinstance(free, int) and isinstance(total, int) and isinstance(used, int):
                free = total - used
            gpus.append(Gpu(index=d.index, name=d.name, uuid=d.uuid, mem_total=total, mem_used=used,
                            mem_free=free, processes=_processes(nvml, d.handle, ours)))
        return GpuReport(gpus, None)
    finally:
        nvml.close()


def run_processes(pid: int | None) -> Container[int]:
    """The processes of the run whose launched (or trainer) process is `pid`: its group and ranks."""
    return gpu_monitor._GroupPids(pid) if pid else ()


def parse_gpu(value: str | int | None) -> int | str | None:
    """`--gpu` as given: None (not chosen), "auto", or a GPU index; a clear error otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text.isdigit():
        return int(text)
    raise LoradeckError(f"--gpu {value!r}: expected a GPU index (see: loradeck gpus) or auto")


def fitting_gpus(report: GpuReport, need: int, gpu: int | str | None = "auto", count: int = 1,
                 reserved: dict[int, int] | None = None) -> tuple[list[Gpu] | None, str]:
    """The GPU(s) a run needing `need` bytes on each of `count` GPUs should start on now, or
    (None, what it waits for).

    `gpu` an index: that GPU when its free memory fits; "auto" or None: the GPUs with the most free
    memory, when they fit. `reserved` holds bytes per GPU index promised to runs that started but
    have not reached their peak yet (the queue's own launches).
    """
    reserved = reserved or {}

    def free(g: Gpu) -> int:
        return (g.mem_free or 0) - reserved.get(g.index, 0)

    if isinstance(gpu, int):
        candidates = [g for g in report.gpus if g.index == gpu]
        if not candidates:
            shown = ", ".join(str(g.index) for g in report.gpus) or "none"
            return None, f"GPU {gpu}, which is not visible (visible: {shown})"
        count = 1
    else:
        candidates = report.gpus
    if not candidates:
        return None, f"a GPU ({report.reason or 'none visible'})"
    ranked = sorted(candidates, key=free, reverse=True)
    fit = [g for g in ranked if free(g) >= need][:count]
    if len(fit) == count:
        return fit, f"GPU {','.join(str(g.index) for g in fit)}: {fmt_gib(free(fit[0]))} free, needs {fmt_gib(need)}"
    best = ranked[0]
    many = f"{count} GPUs" if count > 1 else ("GPU " + str(gpu) if isinstance(gpu, int) else "a GPU")
    return None, (f"{fmt_gib(need)} free on {many}; most free now: GPU {best.index}"
                  f" {fmt_gib(max(0, free(best)))}")


def pick_gpus(cfg: Any, gpu: int | str | None) -> list[Gpu] | None:
    """For `--gpu` on a run started now: the GPU, or None when no choice is to be made (not given,
    or no GPU / NVML here with "auto"). A GPU index that is not there, or "auto" with nothing
    fitting, is a clear error (queue the run instead: --queue)."""
    if gpu is None:
        return None

    report = snapshot()
    if not report.gpus:
        if isinstance(gpu, int):
            raise LoradeckError(f"--gpu {gpu}: no GPU is visible ({report.reason})")
        return None
    need = run_memory.required_bytes(cfg) if gpu == "auto" else 0
    chosen, why = fitting_gpus(report, need, gpu, max(1, int(getattr(cfg, "gpus", 1) or 1)))
    if chosen is None:
        raise LoradeckError(f"--gpu {gpu}: the run does not fit now: it needs {why}",
                            hint="queue it to start by itself when memory frees: add --queue;"
                                 " see who is on which GPU: loradeck gpus")
    return chosen


def visible_env(gpus: list[Gpu] | None) -> dict[str, str]:
    """The environment entries that give a child process only these GPUs."""
    if not gpus:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(g.cuda_visible for g in gpus), "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def child_env(entries: dict[str, str]) -> Iterator[None]:
    """Set `entries` in os.environ while a child is started (loradeck.trainer.runs.lifecycle.launch copies os.environ),
    then put the old values back; a lock keeps two launching threads (the TUI) apart."""
    with _ENV_LOCK:
        old = {k: os.environ.get(k) for k in entries}
        os.environ.update(entries)
        try:
            yield
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def fmt_gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024 ** 3:.1f} GiB"


def report_lines(report: GpuReport) -> list[str]:
    """`loradeck gpus` as text: one block per GPU, its processes below (ours marked *)."""
    if not report.gpus:
        return [f"no GPU to show: {report.reason}"]
    lines = []
    for g in report.gpus:
        lines.append(f"GPU {g.index}  {g.name or '?'}  {fmt_gib(g.mem_free)} free of {fmt_gib(g.mem_total)}"
                     f"  ({len(g.processes)} process{'es' if len(g.processes) != 1 else ''})")
        for p in g.processes:
            mark = "*" if p.ours else " "
            cmd = (p.command or "?")
            lines.append(f" {mark}{p.pid:>8}  {(p.user or '?')[:12]:<12} {fmt_gib(p.memory):>9}  {cmd[:60]}")
    return lines
