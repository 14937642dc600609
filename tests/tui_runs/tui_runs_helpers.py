"""Helpers for the run-screen tests: crafted run folders, synthetic events, a bare app to host a screen."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from textual.app import App

from loradeck.trainer.dataset.project import Project
from loradeck.trainer.events import dumps
from loradeck.trainer.runs.files import RunFiles

T0 = 1_760_000_000.0  # fixed event times keep ETA and snapshots deterministic
GIB = 1024 ** 3


class ScreenApp(App):
    """Hosts one screen, as loradeck.tui.app does, for tests (and lets key latency be recorded)."""

    def __init__(self, screen_factory) -> None:
        super().__init__()
        self._factory = screen_factory

    def on_mount(self) -> None:
        self.push_screen(self._factory())


def step_events(start: int, stop: int, total: int, *, t0: float = T0, dt: float = 0.5, epoch_len: int = 10,
                mem: bool = True) -> list[dict[str, Any]]:
    events = []
    for s in range(start, stop + 1):
        e = {"type": "step", "time": t0 + s * dt, "step": s, "total_steps": total,
             "epoch": (s - 1) // epoch_len + 1, "loss": 0.5 / (1 + s * 0.05) + 0.02 * ((s * 7919) % 11) / 11,
             "lr": 1e-4, "step_time": dt, "samples_per_sec": 2 / dt}
        if mem:
            e.update(mem_allocated=int(2.1 * GIB), mem_peak=int(3.4 * GIB))
        events.append(e)
    return events


def gpu_events(n: int, *, t0: float = T0, proc: bool = True) -> list[dict[str, Any]]:
    return [{"type": "gpu", "time": t0 + i, "available": True, "index": 0, "name": "NVIDIA RTX 3060",
             "mem_used": int((4.0 + 0.001 * i) * GIB), "mem_total": 12 * GIB,
             "proc_mem": int(3.6 * GIB) if proc else None, "util": 97} for i in range(n)]


def run_started(run_id: str, *, t: float = T0, device: str = "cuda:0") -> dict[str, Any]:
    return {"type": "run_started", "time": t, "run_id": run_id, "config": {"max_train_steps": 100},
            "environment": {"device": device, "torch": "2.x"}}


def write_events(files: RunFiles, events: list[dict[str, Any]], mode: str = "w") -> None:
    with open(files.events, mode, encoding="utf-8") as fh:
        for e in events:
            fh.write(dumps(e) + "\n")


def dead_pid() -> int:
    """A pid that surely belongs to no running process (a child we started and reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_run(project: Project, run_id: str, events: list[dict[str, Any]], *, state: str,
             pid: int | None = None, log: str = "") -> RunFiles:
    files = RunFiles(project.run_dir(run_id))
    files.dir.mkdir(parents=True)
    (files.dir / "config.toml").write_text('base_model = "synthetic:tiny"\n')
    write_events(files, events)
    files.log.write_text(log)
    files.status.write_text(json.dumps({"pid": pid if pid is not None else dead_pid(),
                                        "heartbeat": T0, "state": state}))
    return files


def live_status(files: RunFiles, pid: int, state: str = "running") -> None:
    """A status.json with a fresh heartbeat, as a live trainer writes it."""
    import time as _time

    files.status.write_text(json.dumps({"pid": pid, "heartbeat": _time.time(), "state": state}))


def text_of(widget) -> str:
    """The plain text a Static shows."""
    return str(widget.render())


async def train_from_the_form(pilot, app, *, steps: int, timeout: float = 400, check_form=None):
    """From the dataset screen: `t`, a run of `steps` steps, Ctrl+L; returns the monitor once the run ended.
    `check_form(form)` may look at the form before the launch."""
    from textual.widgets import Input, Select

    from loradeck.tui.screens.monitor import MonitorScreen
    from loradeck.tui.screens.train_form import TrainFormScreen
    from tests.waiting import wait_until_async

    await wait_until_async(pilot, lambda: app.screen.__class__.__name__ == "DatasetScreen", message="the dataset")
    await pilot.press("t")
    await wait_until_async(pilot, lambda: isinstance(app.screen, TrainFormScreen), message="the train form")
    form = app.screen
    await pilot.pause()
    if check_form is not None:
        check_form(form)
    form.query_one("#f-length-unit", Select).value = "steps"
    form.query_one("#f-length", Input).value = str(steps)
    await pilot.pause()
    await pilot.press("ctrl+l")
    await wait_until_async(pilot, lambda: isinstance(app.screen, MonitorScreen), timeout=30, message="the monitor")
    monitor = app.screen
    await wait_until_async(pilot, lambda: monitor.view is not None and monitor.view.state in
                           ("completed", "failed", "crashed", "stopped"), timeout=timeout, message="the run to end")
    return monitor
