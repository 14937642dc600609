"""`loradeck monitor` from the shell: an unknown run is a one-line error, and without a terminal it
follows the run in plain lines, sleeping between reads (item 12.11)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from loradeck.trainer.dataset.project import create_project
from loradeck.trainer.runs import lifecycle as runs
from tests.conftest import REPO
from tests.runs.conftest import write_images
from tests.runs.test_process import steps_of
from tests.waiting import wait_until


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_monitor_of_an_unknown_run_exits_1_with_one_line_and_no_tui(root, cli):
    create_project("qa cats", root)
    proc = cli("monitor", "qa cats", "BADRUN", root=root, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: no run 'BADRUN' in project 'qa cats'") and proc.stderr.count("\n") == 1
    assert proc.stdout == ""


def test_monitor_without_a_terminal_prints_plain_lines_stays_idle_and_exits_with_the_runs_status(
        root, fake_trainer, reap, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.2")
    project = create_project("qa cats", root, base_model="synthetic:tiny")
    write_images(project.dataset)
    files = runs.create_run(project, {"max_train_steps": 500, "resolution": 64})
    reap(runs.start(files))
    wait_until(lambda: runs.run_state(files) == "running" and steps_of(files))
    env = dict(os.environ, PYTHONPATH=str(REPO), LORADECK_ROOT=str(root))
    monitor = subprocess.Popen([sys.executable, "-m", "loradeck.tui", "monitor", "qa cats", files.run_id],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(monitor.stdout), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any(line.startswith("step ") for line in lines), timeout=60)
        before, t0 = cpu_seconds(monitor.pid), time.monotonic()
        time.sleep(3.0)
        used, wall = cpu_seconds(monitor.pid) - before, time.monotonic() - t0
        assert used < 0.25 * wall, f"monitor used {used:.2f} s CPU in {wall:.1f} s"  # a spinning one: ~100 %
        assert runs.stop(files, timeout=30)["state"] == "stopped"
        assert monitor.wait(timeout=30) == 2  # stopped, as `loradeck train` reports it
    finally:
        if monitor.poll() is None:
            os.killpg(monitor.pid, signal.SIGKILL)
    reader.join(timeout=5)
    assert lines[0].startswith(f"following run {files.run_id}")
    assert lines[-1].strip().startswith(f"run {files.run_id} stopped at step ")
    assert monitor.stderr.read() == ""
