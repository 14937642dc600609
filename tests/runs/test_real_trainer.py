"""End to end with the real trainer (loradeck.trainer.train.process) on synthetic:tiny, through the CLI."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from loradeck.trainer import events as schema
from loradeck.trainer.events import read_all
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.files import RunFiles
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

TINY = ["--base-model", "synthetic:tiny", "--resolution", "64", "--mixed-precision", "no"]


def test_train_detached_kill_9_then_resume_reaches_the_same_total(project, cli, root):
    """`loradeck train --detach` on synthetic:tiny, kill -9 mid-run: the run reads as crashed, and
    `loradeck resume` (foreground) continues from the last saved state to the same total steps."""
    started = cli("train", "toy", *TINY, "--steps", "8", "--save-every-steps", "2", "--detach", "--json",
                  root=root, check=True)
    info = json.loads(started.stdout)
    pid, files = info["pid"], RunFiles(Path(info["run_dir"]))
    try:
        checkpoint = wait_until(lambda: next((e for e in read_all(files.events) if e["type"] == "checkpoint"), None),
                                timeout=180)
    finally:
        os.killpg(pid, signal.SIGKILL)  # kill -9 the whole run, wherever it is
    assert wait_until(lambda: runs.run_state(files) == "crashed", timeout=15)
    listed = json.loads(cli("runs", "toy", "--json", root=root, check=True).stdout)
    assert listed["runs"][0]["state"] == "crashed"

    resumed = cli("resume", "toy", files.run_id[:13], "--json", root=root, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert (summary["state"], summary["step"], summary["total_steps"]) == ("completed", 8, 8)
    events = read_all(files.events)
    starts = [e for e in events if e["type"] == "run_started"]
    assert len(starts) == 2 and starts[1]["start_step"] >= checkpoint["step"] >= 2
    after_resume = [e["step"] for e in events[events.index(starts[1]):] if e["type"] == "step"]
    assert after_resume == list(range(starts[1]["start_step"] + 1, 9))
    assert os.path.getsize(summary["output"]) > 0
    listed = json.loads(cli("runs", "toy", "--json", root=root, check=True).stdout)
    assert [(r["run_id"], r["state"], r["step"]) for r in listed["runs"]] == [(files.run_id, "completed", 8)]
    # Everything the trainer wrote is in the one schema (trainer/events.py, docs/events.md).
    assert {"run_started", "step", "checkpoint", "run_finished", "gpu"} <= {e["type"] for e in events}
    for event in events:
        known = {"type", "time", *schema.REQUIRED[event["type"]], *schema.OPTIONAL[event["type"]]}
        assert set(event) <= known, f"{event['type']}: undocumented {sorted(set(event) - known)}"
    again = cli("resume", "toy", files.run_id, root=root)
    assert again.returncode == 1 and "already completed" in again.stderr
