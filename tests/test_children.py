"""The one child launcher's watched run: lines arrive while the child works, and a cancel ends its group."""

from __future__ import annotations

import os
import sys
import time

import pytest

from loradeck.trainer import children

# A child that starts a grandchild in its own process group, says where both are, then waits for a long time.
FAMILY = """
import subprocess, sys, time
grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("pids", grandchild.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    """No such process, or only a zombie left for its parent (init) to reap."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_lines_arrive_while_the_child_is_still_working(tmp_path):
    go = tmp_path / "go"
    # The child only finishes once the parent has seen its first line (and created `go` in reply).
    code = f"import os, time\nprint('ready', flush=True)\nwhile not os.path.exists({str(go)!r}): time.sleep(0.02)\nprint('done')"
    seen = []

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "ready":
            go.touch()

    proc = children.run_watched([sys.executable, "-c", code], on_line=on_line, timeout=120)
    assert proc.returncode == 0 and seen == ["ready", "done"] and proc.stdout == "ready\ndone\n"


def test_a_cancel_ends_the_child_and_its_whole_process_group():
    pids = []

    def on_line(line: str) -> None:
        if line.startswith("pids"):
            pids.append(int(line.split()[1]))

    with pytest.raises(children.Cancelled, match="the sleeper was cancelled"):
        children.run_watched([sys.executable, "-c", FAMILY], on_line=on_line, should_stop=lambda: bool(pids),
                             what="the sleeper", timeout=300)
    assert pids and _wait_gone(pids[0]), "the grandchild outlived the cancel"


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace(monkeypatch):
    monkeypatch.setattr(children, "CANCEL_GRACE_SECONDS", 0.5)
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('deaf', flush=True)\ntime.sleep(600)"
    seen = []
    with pytest.raises(children.Cancelled):
        children.run_watched([sys.executable, "-c", code], on_line=seen.append, should_stop=lambda: bool(seen),
                             timeout=300)
    assert seen == ["deaf"]


def test_a_failing_callback_does_not_leave_the_child_running():
    pids = []

    def on_line(line: str) -> None:
        pids.append(int(line.split()[1]))
        raise RuntimeError("the reader broke")

    with pytest.raises(RuntimeError):
        children.run_watched([sys.executable, "-c", FAMILY], on_line=on_line, timeout=300)
    assert pids and _wait_gone(pids[0])


def test_the_child_gets_the_one_environment_rule(monkeypatch):
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)
    proc = children.run_watched([sys.executable, "-c", "import os; print(os.environ.get('PYTHONUNBUFFERED'))"])
    assert proc.stdout == "1\n" and os.environ.get("PYTHONUNBUFFERED") is None
