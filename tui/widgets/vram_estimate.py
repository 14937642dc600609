"""The train form's live GPU-memory line: the run's estimate, coloured against the GPU's free memory.

The estimate (loradeck.trainer.gpu.vram_estimate) needs torch, which the TUI never imports: the app's warm
estimator child answers (loradeck.tui.estimator; a screen outside the app gets its own, closed when the
line goes). Questions are debounced (typing "512" asks once) and a newer question overtakes an older
one. Free memory comes from NVML (loradeck.trainer.gpu.monitor, no torch).
"""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.widgets import Static

from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.gpu import monitor as gpu_monitor
from loradeck.trainer.gpu.vram_estimate import KNOB_FIELDS
from loradeck.tui.estimator import Estimator

GiB = 1024 ** 3


def describe(estimate: dict[str, Any], gpus: list[dict[str, Any]], n_gpus: int = 1) -> Text:
    """"GPU memory ≈ 5.1 GiB (peak 4.5 GiB allocated): fits GPU 0 (70.0 GiB free)", coloured."""
    need = estimate["nvidia_smi_bytes"]
    head = f"GPU memory ≈ {need / GiB:.1f} GiB (peak {estimate['expected_peak_bytes'] / GiB:.1f} GiB allocated)"
    if not gpus:
        return Text(f"{head}: no GPU here", style="dim")
    target = gpus[:max(1, n_gpus)]
    free = [g.get("mem_total", 0) - g.get("mem_used", 0) for g in target
            if isinstance(g.get("mem_total"), int) and isinstance(g.get("mem_used"), int)]
    if not free:
        return Text(f"{head}: GPU free memory unknown", style="yellow")
    least = min(free)
    where = f"GPU {target[free.index(least)].get('index', 0)} ({least / GiB:.1f} GiB free)"
    if need <= least:
        return Text(f"{head}: fits {where}", style="green")
    return Text(f"{head}: does not fit {where}", style="bold red")


class EstimateLine(Static):
    """Shows the estimate for the config given to `request` (None: the form has problems)."""

    DEBOUNCE_SECONDS = 0.8

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("", markup=False, **kwargs)
        self._knobs: dict[str, Any] | None = None
        self._timer = None
        self._own_estimator: Estimator | None = None
        self.generation = 0  # bumped per request; a result of an older one is dropped
        self.questions_asked = 0
        self.result: dict[str, Any] | None = None

    @property
    def estimator(self) -> Estimator:
        shared = getattr(self.app, "estimator", None)
        if isinstance(shared, Estimator):
            return shared
        if self._own_estimator is None:
            self._own_estimator = Estimator()
        return self._own_estimator

    def on_mount(self) -> None:
        self._warm_up()

    @work(thread=True, group="vram-estimate-start", exit_on_error=False, description="start the estimator")
    def _warm_up(self) -> None:
        self.estimator.start()

    def request(self, cfg: TrainConfig | None) -> None:
        knobs = None if cfg is None else {k: getattr(cfg, k) for k in KNOB_FIELDS + ("gpus",)}
        if knobs == self._knobs:
            return  # a change that does not touch memory (learning rate, steps, ...)
        self._knobs = knobs
        self.generation += 1
        if self._timer is not None:
            self._timer.stop()
        if knobs is None:
            self.update(Text("GPU memory: fix the problems above to see the estimate", style="dim"))
            return
        self.update(Text("GPU memory: estimating…", style="dim"))
        self._timer = self.set_timer(self.DEBOUNCE_SECONDS, lambda g=self.generation, c=cfg: self._run(g, c))

    @work(thread=True, exit_on_error=False, description="VRAM estimate")
    def _run(self, generation: int, cfg: TrainConfig) -> None:
        if generation != self.generation:
            return
        self.questions_asked += 1
        data = self.estimator.ask(cfg.to_dict())
        if data is None or generation != self.generation:
            return  # overtaken: a newer question owns the line
        gpus = gpu_monitor.query_devices() if data.get("ok") else []
        self.app.call_from_thread(self._show, generation, data, gpus, cfg.gpus)

    def _show(self, generation: int, data: dict[str, Any], gpus: list[dict[str, Any]], n_gpus: int) -> None:
        if generation != self.generation:
            return
        self.result = data
        if not data.get("ok"):
            self.update(Text(f"GPU memory: no estimate ({data.get('error')})", style="yellow"))
            return
        self.update(describe(data, gpus, n_gpus))

    def on_unmount(self) -> None:
        self.generation += 1
        if self._own_estimator is not None:
            self._own_estimator.close()
