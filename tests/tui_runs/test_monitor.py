"""The monitor screen: history and live tail of a run, graphs, ETA, alerts, no-GPU, stop and resume."""

from __future__ import annotations

import pytest
from PIL import Image
from textual.widgets import Static
from tui_runs_helpers import (
    T0,
    ScreenApp,
    gpu_events,
    live_status,
    make_run,
    run_started,
    step_events,
    text_of,
    write_events,
)

from loradeck.trainer.events import read_all
from loradeck.tui.screens.monitor import MonitorScreen
from loradeck.tui.widgets.charts import LossChart, VramChart
from tests.fake_trainer import lookalike_trainer
from tests.waiting import wait_until, wait_until_async


@pytest.fixture
def live_process(project):
    """A process that looks like a trainer of runs/live to the engine (its command line names the run)."""
    run_dir = project.run_dir("live")
    proc = lookalike_trainer(run_dir)
    yield proc.pid
    proc.kill()
    proc.wait()


def monitor_app(project, run_id=None):
    return ScreenApp(lambda: MonitorScreen(project, run_id, poll_interval=0.05))


async def test_reattach_to_a_finished_run_shows_its_whole_history(project):
    files = make_run(project, "done", [run_started("done")] + step_events(1, 200, 200) + gpu_events(100) + [
        {"type": "sample", "time": T0 + 50, "step": 100, "path": "samples/s100.png", "prompt": "a cat"},
        {"type": "run_finished", "time": T0 + 101, "status": "completed", "output": "/x/lora.safetensors"}],
        state="completed", log="loading model\nstep 200/200\n")
    files.samples.mkdir()
    Image.new("RGB", (64, 64), (250, 0, 0)).save(files.samples / "s100.png")
    app = monitor_app(project, "done")
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        await wait_until_async(pilot, lambda: screen.view is not None and screen.view.step == 200, message="history")
        assert screen.view.state == "completed"
        assert len(app.screen.query_one(LossChart).traces[0].xs) == 200
        assert {t.label for t in screen.query_one(VramChart).traces} == {
            "device used", "this run", "torch peak", "torch alloc"}
        status = text_of(screen.query_one("#status", Static))
        assert "completed" in status and "step 200/200" in status and "ETA" not in status
        assert "/x/lora.safetensors" in text_of(screen.query_one("#finished", Static))
        assert "step 200/200" in text_of(screen.query_one("#log", Static))
        assert not screen.query_one("#side").has_class("hidden")
        assert "a cat" in text_of(screen.query_one("#sample-caption", Static))


async def test_the_latest_run_is_opened_when_no_run_is_named(project):
    make_run(project, "20260101-000000-aaaa", [run_started("a")] + step_events(1, 5, 10), state="stopped")
    make_run(project, "20260102-000000-bbbb", [run_started("b")] + step_events(1, 7, 10), state="stopped")
    app = monitor_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: app.screen.view is not None, message="a view")
        assert app.screen.run_id == "20260102-000000-bbbb" and app.screen.view.step == 7


async def test_a_live_run_updates_as_events_are_appended_with_speed_and_eta(project, live_process):
    files = make_run(project, "live", [run_started("live")] + step_events(1, 10, 100, dt=0.5),
                     state="running", pid=live_process)
    live_status(files, live_process)
    app = monitor_app(project, "live")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until_async(pilot, lambda: screen.view is not None and screen.view.step == 10, message="first view")
        assert screen.view.state == "running"
        status = text_of(screen.query_one("#status", Static))
        assert "2.00 it/s" in status and "ETA 45s" in status and "step 10/100" in status
        write_events(files, step_events(11, 30, 100, dt=0.5), mode="a")
        await wait_until_async(pilot, lambda: screen.view.step == 30, message="appended steps")
        assert "ETA 35s" in text_of(screen.query_one("#status", Static))
        assert len(screen.query_one(LossChart).traces[0].xs) == 30


async def test_errors_are_shown_with_their_hint(project):
    make_run(project, "oom", [run_started("oom")] + step_events(1, 3, 10) + [
        {"type": "error", "time": T0 + 5, "kind": "oom", "message": "CUDA out of memory. Tried to allocate 2 GiB",
         "hint": "turn on gradient checkpointing or lower the batch size"},
        {"type": "run_finished", "time": T0 + 6, "status": "failed", "message": "out of memory"}],
        state="failed")
    app = monitor_app(project, "oom")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: app.screen.view is not None, message="a view")
        alerts = text_of(app.screen.query_one("#alerts", Static))
        assert "OOM: CUDA out of memory" in alerts
        assert "→ turn on gradient checkpointing or lower the batch size" in alerts
        assert "press r to resume" in text_of(app.screen.query_one("#finished", Static))


async def test_no_gpu_and_no_nvml_are_said_plainly(project):
    make_run(project, "nonvml", [run_started("nonvml"), {"type": "gpu", "time": T0, "available": False,
                                                         "reason": "NVML library not found"}]
             + step_events(1, 3, 10), state="stopped")
    make_run(project, "cpu", [run_started("cpu", device="cpu")] + step_events(1, 3, 10, mem=False), state="stopped")
    app = monitor_app(project, "nonvml")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: app.screen.view is not None, message="a view")
        assert "GPU: not monitored: NVML library not found" in text_of(app.screen.query_one("#device", Static))
        # torch's own numbers from the step events are still drawn
        assert {t.label for t in app.screen.query_one(VramChart).traces} == {"torch peak", "torch alloc"}
    app = monitor_app(project, "cpu")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: app.screen.view is not None, message="a view")
        vram = app.screen.query_one(VramChart)
        assert not vram.traces and "No GPU: this run trains on cpu" in str(vram.render())
        assert app.screen.query_one(LossChart).traces  # the loss still shows


async def test_ten_thousand_events_written_fast_are_coalesced_and_keys_still_answer(project, live_process):
    files = make_run(project, "live", [run_started("live")], state="running", pid=live_process)
    live_status(files, live_process)
    app = monitor_app(project, "live")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until_async(pilot, lambda: screen.view is not None, message="a view")
        for start in range(1, 10_001, 1000):  # ten fast bursts
            write_events(files, step_events(start, start + 999, 10_000, mem=False), mode="a")
            await pilot.press("l")  # toggling the log must still work between bursts
        await wait_until_async(pilot, lambda: screen.view.step == 10_000, message="all 10 000 events")
        assert screen.updates_applied < 200  # not one redraw per event
        assert screen.query_one("#log").has_class("large") is False  # 10 presses: back where it was


async def test_an_unknown_run_is_named_in_the_error(project):
    make_run(project, "20260101-000000-aaaa", [run_started("a")], state="stopped")
    app = monitor_app(project, "nope")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: "no run 'nope' in project 'cats'"
                               in text_of(app.screen.query_one("#finished", Static)), message="the missing run's note")


async def test_a_project_without_runs_says_how_to_start_one(project):
    app = monitor_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: "has no runs yet" in text_of(app.screen.query_one("#finished", Static)),
                               message="the no-runs note")


async def test_stop_and_resume_from_the_monitor(trainable, fake_trainer):
    from loradeck.trainer.runs import lifecycle as runs

    files = runs.create_run(trainable, {"max_train_steps": 1000})
    runs.start(files)
    app = monitor_app(trainable, files.run_id)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until_async(pilot, lambda: screen.view is not None and screen.view.state == "running"
                               and screen.view.step > 0, timeout=30, message="the run to start")
        await pilot.press("s")
        await pilot.press("y")  # confirm
        await wait_until_async(pilot, lambda: screen.view.state == "stopped", timeout=30, message="stopped")
        stopped_at = screen.view.step
        assert "press r to resume" in text_of(screen.query_one("#finished", Static))
        await pilot.press("r")
        await wait_until_async(pilot, lambda: screen.view.state == "running" and screen.view.step > stopped_at,
                               timeout=30, message="resumed and stepping")
        # the history before the stop is still on the graph
        assert screen.query_one(LossChart).traces[0].xs[0] == 1
    # closing the TUI leaves the run going: it keeps stepping
    closed_at = screen.view.step
    wait_until(lambda: runs.run_state(files) == "running" and max(
        (e["step"] for e in read_all(files.events) if e["type"] == "step"), default=0) > closed_at, 30,
        message="the run to keep stepping after the TUI closed")
    assert runs.stop(files)["state"] == "stopped"


async def test_a_covered_monitor_catches_up_when_it_is_shown_again(project, live_process):
    from loradeck.tui.screens.runs import RunsScreen

    files = make_run(project, "live", [run_started("live")] + step_events(1, 5, 100), state="running",
                     pid=live_process)
    live_status(files, live_process)
    app = monitor_app(project, "live")
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = app.screen
        await wait_until_async(pilot, lambda: monitor.view is not None and monitor.view.step == 5, message="first view")
        await pilot.press("u")
        assert isinstance(app.screen, RunsScreen)
        write_events(files, step_events(6, 40, 100), mode="a")
        await wait_until_async(pilot, lambda: monitor.view.step == 40, message="the watcher to read on")
        drawn = monitor.updates_applied
        await pilot.pause(0.3)
        assert monitor.updates_applied == drawn  # nothing is drawn while covered
        assert "step 5/100" in text_of(monitor.query_one("#status", Static))
        await pilot.press("escape")
        assert app.screen is monitor
        await wait_until_async(pilot, lambda: "step 40/100" in text_of(monitor.query_one("#status", Static)),
                               message="the newest view drawn")


async def test_loradeck_monitor_opens_the_latest_run_over_the_projects_list(project):
    """`loradeck monitor NAME` = loradeck.tui.app's LoradeckApp with monitor=(NAME, None)."""
    from loradeck.tui.app import LoradeckApp

    make_run(project, "20260101-000000-aaaa", [run_started("a")] + step_events(1, 9, 9) + [
        {"type": "run_finished", "time": T0 + 9, "status": "completed"}], state="completed")
    app = LoradeckApp(project.root, monitor=("cats", None))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.view is not None,
                               message="the monitor")
        assert app.screen.view.state == "completed" and app.screen.view.step == 9
        await pilot.press("escape")
        assert type(app.screen).__name__ == "ProjectsScreen"


async def test_a_live_run_shows_its_newest_checkpoint(project, live_process):
    files = make_run(project, "live", [run_started("live")] + step_events(1, 20, 100) + [
        {"type": "checkpoint", "time": T0 + 5, "step": 10, "path": "checkpoints/lora-step00000010.safetensors"},
        {"type": "checkpoint", "time": T0 + 10, "step": 20, "path": "checkpoints/lora-step00000020.safetensors"}],
        state="running", pid=live_process)
    live_status(files, live_process)
    app = monitor_app(project, "live")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: app.screen.view is not None, message="a view")
        assert text_of(app.screen.query_one("#finished", Static)) == (
            "checkpoint 2 at step 20: lora-step00000020.safetensors")


async def test_a_resumed_run_shows_its_repeated_start_up_warning_once(project):
    cpu = {"type": "warning", "kind": "no_gpu", "message": "no CUDA GPU found: training on the CPU"}
    make_run(project, "again", [run_started("again"), dict(cpu, time=T0)] + step_events(1, 3, 10) + [
        {"type": "run_finished", "time": T0 + 4, "status": "stopped"},
        run_started("again", t=T0 + 10), dict(cpu, time=T0 + 10),
        {"type": "warning", "time": T0 + 11, "kind": "nan", "message": "loss was NaN at step 4"}]
        + step_events(4, 5, 10, t0=T0 + 10), state="stopped")
    app = monitor_app(project, "again")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: app.screen.view is not None and app.screen.view.step == 5,
                               message="a view")
        alerts = text_of(app.screen.query_one("#alerts", Static))
        assert alerts.count("no CUDA GPU found") == 1
        assert "loss was NaN at step 4" in alerts
