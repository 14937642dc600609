"""The queue and the shared GPU box in the TUI: a queued run's state and place on the runs screen,
what it waits for in its monitor, cancel from there, the train form's GPU / queue placement, and the
monitor's table of every process on each GPU (this run's marked), against a scripted NVML."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from textual.widgets import Checkbox, DataTable, Select, Static
from tui_runs_helpers import ScreenApp, text_of

from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs import queue as run_queue
from loradeck.trainer.runs.files import RunFiles
from loradeck.tui import run_actions
from loradeck.tui.screens.monitor import MonitorScreen
from loradeck.tui.screens.runs import RunsScreen
from loradeck.tui.screens.train_form import TrainFormScreen
from loradeck.tui.widgets.gpu_table import GpuTable
from tests.runs.queue_helpers import FAKE_NVML_DIR, GiB, ScriptedNvml, load_fake_pynvml
from tests.waiting import wait_until_async

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def gpus(tmp_path, monkeypatch):
    script = ScriptedNvml(tmp_path / "nvml.json").save()
    monkeypatch.setenv("FAKE_NVML_FILE", str(script.path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE_NVML_DIR), str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(run_queue.POLL_ENV, "0.2")
    monkeypatch.setenv(run_queue.QUEUE_ENV, str(tmp_path / "queue"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", load_fake_pynvml())
    yield script
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(tmp_path) in part for part in proc.info["cmdline"] or []):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass


async def test_a_queued_run_shows_its_place_and_what_it_waits_for_and_s_cancels_it(trainable, gpus,
                                                                                  fake_trainer):
    gpus.gpu(total=24 * GiB, used=24 * GiB)
    files = run_actions.launch(trainable, {"max_train_steps": 5, "resolution": 64}, queue=True)
    app = ScreenApp(lambda: RunsScreen(trainable, refresh_seconds=0.2))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 1, message="the row")
        assert str(table.get_cell(files.run_id, "state")) == "queued"
        assert str(table.get_cell(files.run_id, "steps")) == "#1 of 1"
        detail = app.screen.query_one("#runs-detail", Static)
        await wait_until_async(pilot, lambda: "free now" in text_of(detail), message="the head's reason")
        assert "queued 1/1: waits for" in text_of(detail) and "s: cancel" in text_of(detail)
        await pilot.press("enter")
        assert isinstance(app.screen, MonitorScreen)
        monitor = app.screen
        await wait_until_async(pilot, lambda: monitor.view is not None and monitor.view.state == "queued",
                               message="monitor")
        finished = monitor.query_one("#finished", Static)
        await wait_until_async(pilot, lambda: "waits for" in text_of(finished), message="the monitor's queue line")
        assert "GiB free on a GPU" in text_of(finished)
        assert "queued" in text_of(monitor.query_one("#status", Static))
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("y")
        await wait_until_async(pilot, lambda: runs.run_state(files) == "stopped", timeout=15, message="the cancel")
    assert not Path(run_queue.read_queue_record(files)["ticket"]).exists()


async def test_the_train_form_queues_a_run_on_the_gpu_chosen_and_it_starts_when_memory_frees(
        trainable, gpus, fake_trainer):
    fake_trainer["steps"] = 3
    gpus.gpu(name="NVIDIA L4", total=24 * GiB, used=24 * GiB, uuid="GPU-l4")
    gpus.gpu(name="NVIDIA A100", total=80 * GiB, used=80 * GiB, uuid="GPU-a100")
    app = ScreenApp(lambda: TrainFormScreen(trainable))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        select = screen.query_one("#placement-gpu", Select)
        await wait_until_async(pilot, lambda: len(select._options) >= 4, message="the GPUs in the select")
        assert "GPU 1: NVIDIA A100, 0.0 GiB free" in [str(label) for label, _ in select._options]
        select.value = "1"
        screen.query_one("#placement-queue", Checkbox).value = True
        await pilot.pause()
        await pilot.press("ctrl+l")
        await wait_until_async(pilot, lambda: isinstance(app.screen, MonitorScreen), timeout=20, message="the monitor")
        monitor = app.screen
        await wait_until_async(pilot, lambda: monitor.view is not None and monitor.view.state == "queued",
                               message="queued")
        [files] = runs.run_folders(trainable)
        assert run_queue.read_queue_record(files)["gpu"] == 1
        gpus.set_used(0, 0)  # GPU 0 frees: not the one it asked for
        await pilot.pause(1.0)
        assert runs.run_state(files) == "queued"
        gpus.set_used(1, 0)
        await wait_until_async(pilot, lambda: monitor.view.state == "completed", timeout=30, message="the run")
    assert "starting on GPU 1 (NVIDIA A100)" in files.log.read_text()


async def test_the_monitor_lists_every_process_on_each_gpu_with_this_runs_marked(trainable, gpus):
    sleeper = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        files = RunFiles(trainable.run_dir("20260101-000000-aaaa"))
        files.dir.mkdir(parents=True)
        files.config.write_text('base_model = "synthetic:tiny"\n')
        files.launch.write_text(json.dumps({"pid": sleeper.pid, "pgid": sleeper.pid, "time": 1.0}))
        gpus.gpu(name="NVIDIA RTX 3060", total=12 * GiB, used=7 * GiB,
                 compute=[(sleeper.pid, 4 * GiB), (os.getpid(), 2 * GiB)])
        app = ScreenApp(lambda: MonitorScreen(trainable, files.run_id))
        async with app.run_test(size=(80, 24)) as pilot:
            table = app.screen.query_one(GpuTable)
            await wait_until_async(pilot, lambda: table.report is not None, message="the GPU table")
            assert table.display
            shown = text_of(table)
            assert "GPU 0 NVIDIA RTX 3060: 5.0 GiB free of 12.0 GiB" in shown
            [ours] = [line for line in shown.splitlines() if line.startswith("*")]
            assert str(sleeper.pid) in ours and "4.0 GiB" in ours and "sleep 60" in ours
            assert psutil.Process().username() in ours
            assert any(str(os.getpid()) in line and not line.startswith("*") for line in shown.splitlines())
    finally:
        sleeper.kill()
        sleeper.wait()


async def test_the_gpu_table_is_hidden_without_nvml(trainable, gpus):
    gpus.no_nvml()
    files = RunFiles(trainable.run_dir("20260101-000000-aaaa"))
    files.dir.mkdir(parents=True)
    files.config.write_text('base_model = "synthetic:tiny"\n')
    app = ScreenApp(lambda: MonitorScreen(trainable, files.run_id))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(GpuTable)
        await wait_until_async(pilot, lambda: table.report is not None, message="the GPU poll")
        assert not table.has_class("-shown") and "Driver Not Loaded" in table.report.reason
        assert "not monitored" not in text_of(table)  # the device line says it, once
