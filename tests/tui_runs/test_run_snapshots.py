"""How the run screens look at 80×24 (pytest-textual-snapshot; update with --snapshot-update)."""

from __future__ import annotations

import time

import pytest
from tui_runs_helpers import T0, ScreenApp, gpu_events, make_run, run_started, step_events

from loradeck.tui.screens.monitor import MonitorScreen
from loradeck.tui.screens.runs import RunsScreen
from loradeck.tui.screens.train_form import TrainFormScreen
from tests.waiting import wait_until_async

SIZE = (80, 24)


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_monitor_of_a_failed_run(project, snap_compare):
    make_run(project, "20260101-120000-abcd", [run_started("r")] + step_events(1, 120, 300) + gpu_events(60) + [
        {"type": "error", "time": T0 + 61, "kind": "oom", "message": "CUDA out of memory. Tried to allocate 1.5 GiB",
         "hint": "turn on gradient checkpointing or lower the batch size"},
        {"type": "run_finished", "time": T0 + 61, "status": "failed"}],
        state="failed", log="step 119/300 loss 0.12\nstep 120/300 loss 0.11\nCUDA out of memory\n")
    app = ScreenApp(lambda: MonitorScreen(project, None, poll_interval=0.05))

    async def ready(pilot):
        await wait_until_async(pilot, lambda: app.screen.view is not None and app.screen.view.state == "failed")
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)


def test_train_form_with_an_error(trainable, snap_compare, monkeypatch):
    from loradeck.tui import run_actions

    # The Slurm toggle shows only where sbatch exists: the picture must not depend on the machine.
    monkeypatch.setattr(run_actions, "slurm_available", lambda: False)
    app = ScreenApp(lambda: TrainFormScreen(trainable))

    async def edit(pilot):
        await wait_until_async(pilot, lambda: app.screen.query("#f-rank") and app.screen.query_one("#f-rank").value)
        # the preflight of the valid defaults shows first (a worker, after a debounce)
        await wait_until_async(pilot, lambda: app.screen.query_one("#preflight").checks_done >= 1)
        app.screen.query_one("#f-rank").value = "0"
        await wait_until_async(pilot, lambda: "rank" in app.screen.errors)
        app.screen.set_focus(None)  # no blinking cursor in the picture
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=edit)


def test_runs_list(project, snap_compare, utc):
    make_run(project, "20260101-120000-aaaa", [run_started("a")] + step_events(1, 10, 10) + [
        {"type": "run_finished", "time": T0 + 10, "status": "completed", "output": "lora.safetensors"}],
        state="completed")
    make_run(project, "20260102-120000-bbbb", [run_started("b", t=T0 + 100)] + step_events(1, 4, 10, t0=T0 + 100),
             state="running")
    app = ScreenApp(lambda: RunsScreen(project))

    async def ready(pilot):
        await wait_until_async(pilot, lambda: len(app.screen.rows) == 2)
        await pilot.pause(0.1)

    assert snap_compare(app, terminal_size=SIZE, run_before=ready)
