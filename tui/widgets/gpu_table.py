"""Who is on which GPU, for the monitor's VRAM panel: each GPU's free memory and every process on it
(user, pid, memory, command), this run's ranks marked `*`. Polled in a worker thread every few
seconds, the next poll scheduled only after the previous one finished. Hidden where NVML sees no
GPU: the monitor's device line already says so, once."""

from __future__ import annotations

from typing import Callable, Container

from rich.text import Text
from textual import work
from textual.widgets import Static

from loradeck.trainer.gpu import processes as gpu_processes

POLL_SECONDS = 3.0


def table_text(report: gpu_processes.GpuReport) -> Text:
    text = Text()
    for g in report.gpus:
        if text:
            text.append("\n")
        text.append(f"GPU {g.index} {g.name or '?'}: {gpu_processes.fmt_gib(g.mem_free)} free"
                    f" of {gpu_processes.fmt_gib(g.mem_total)}", style="bold")
        if not g.processes:
            text.append("  (no processes)", style="dim")
        for p in g.processes:
            line = (f"\n{'*' if p.ours else ' '} {(p.user or '?')[:10]:<10} {p.pid:>7}"
                    f" {gpu_processes.fmt_gib(p.memory):>9}  {p.command or '?'}")
            text.append(line, style="bold green" if p.ours else "")
    return text


class GpuTable(Static):
    """`pid_of()` gives the run's launched / trainer pid (None before it has one)."""

    DEFAULT_CSS = """
    GpuTable { height: auto; max-height: 6; display: none; text-wrap: nowrap; text-overflow: ellipsis; }
    GpuTable.-shown { display: block; }
    """

    def __init__(self, pid_of: Callable[[], int | None], *, poll_seconds: float = POLL_SECONDS, **kw) -> None:
        super().__init__("", markup=False, **kw)
        self.pid_of = pid_of
        self.poll_seconds = poll_seconds
        self.report: gpu_processes.GpuReport | None = None

    def on_mount(self) -> None:
        self.poll()

    @work(thread=True, exclusive=True, group="gpu-table", exit_on_error=False, description="list GPU processes")
    def poll(self) -> None:
        try:
            pid = self.pid_of()
            ours: Container[int] = gpu_processes.run_processes(pid)
            report = gpu_processes.snapshot(ours)
        except Exception as e:  # monitoring must not take the monitor down
            report = gpu_processes.GpuReport([], f"could not list GPU processes: {e}")
        if self.is_attached:
            self.app.call_from_thread(self._show, report)

    def _show(self, report: gpu_processes.GpuReport) -> None:
        self.report = report
        self.set_class(bool(report.gpus), "-shown")
        if report.gpus:
            self.update(table_text(report))
        self.set_timer(self.poll_seconds, self.poll)
