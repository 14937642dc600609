"""Child processes: one command form and one environment rule for every process loradeck starts.

A child is this interpreter running `-m loradeck.<module>`, so it imports loradeck from exactly where
this process did (the installed package, editable or not; never a PYTHONPATH guess). Its environment
is ours plus PYTHONUNBUFFERED, so logs and event pipes are live. Detached children (the trainer, a
queue waiter) get their own session, so a stop signals their whole process group and nothing else.

    start()         Popen, detached or not
    run()           subprocess.run, to the end
    run_watched()   to the end, but each stdout line is seen as it comes, and it can be cancelled
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Mapping

from loradeck.trainer.errors import LoradeckError

# How long a cancelled child gets to exit on SIGTERM before its group is killed.
CANCEL_GRACE_SECONDS = 5.0


class Cancelled(LoradeckError):
    """A child (and the work it did for us) was stopped on request before it finished."""


def module_argv(module: str, *args: str, python: str | None = None) -> list[str]:
    """`python -m module args...` with this interpreter (or `python`)."""
    return [python or sys.executable, "-m", module, *args]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The one environment rule: ours, unbuffered, plus `extra`."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start(argv: list[str], *, detached: bool = False, **popen: Any) -> subprocess.Popen:
    """Popen with the rule's environment, stdin from /dev/null unless given, and (detached) its own session."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    popen.setdefault("close_fds", True)
    popen["env"] = child_env(popen.get("env"))
    return subprocess.Popen(argv, start_new_session=detached or popen.pop("start_new_session", False), **popen)


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """subprocess.run with the rule's environment."""
    kwargs["env"] = child_env(kwargs.get("env"))
    if "input" not in kwargs:  # input= opens its own pipe
        kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run(argv, **kwargs)


def run_watched(argv: list[str], *, on_line: Callable[[str], None] | None = None,
                should_stop: Callable[[], bool] | None = None, timeout: float | None = None,
                poll: float = 0.1, what: str = "the child process", **popen: Any) -> subprocess.CompletedProcess:
    """Run a child to its end, like `run(argv, capture_output=True, text=True)`, but watched.

    Each stdout line (without its newline) goes to `on_line` as it arrives, in the calling thread.
    The child gets its own process group; when `should_stop()` turns true (polled every `poll`
    seconds) the group gets SIGTERM, then SIGKILL after CANCEL_GRACE_SECONDS, and Cancelled
    ("`what` was cancelled") is raised. Past `timeout` the group is killed and subprocess.TimeoutExpired
    raised, as `run` does. Any exception in here (a Ctrl-C, a failing `on_line`) ends the child too:
    it never outlives us.
    """
    proc = start(argv, detached=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                 encoding="utf-8", errors="replace", **popen)
    lines: queue.Queue[str | None] = queue.Queue()
    err: list[str] = []

    def pump_stdout() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    readers = [threading.Thread(target=pump_stdout, daemon=True),
               threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)]
    for t in readers:
        t.start()
    out: list[str] = []
    deadline = None if timeout is None else time.monotonic() + timeout
    stdout_open = True
    try:
        while stdout_open or proc.poll() is None:
            try:
                line = lines.get(timeout=poll) if stdout_open else None
            except queue.Empty:
                line = ""
            if line is None:
                stdout_open = False
                if proc.poll() is None:
                    time.sleep(poll)  # stdout closed, the process not yet gone
            elif line:
                out.append(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            if should_stop is not None and should_stop():
                _end_group(proc, CANCEL_GRACE_SECONDS)
                raise Cancelled(f"{what} was cancelled")
            if deadline is not None and time.monotonic() > deadline:
                _end_group(proc, 0)
                raise subprocess.TimeoutExpired(argv, timeout, output="".join(out), stderr="".join(err))
    except BaseException:
        if proc.poll() is None:
            _end_group(proc, 0)
        raise
    finally:
        for t in readers:
            t.join(timeout=CANCEL_GRACE_SECONDS)
        for stream in (proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()
    return subprocess.CompletedProcess(argv, proc.returncode, "".join(out), "".join(err))


def _end_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM the child's process group, SIGKILL it after `grace` seconds (at once when 0), and reap it."""
    if grace > 0:
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc, signal.SIGKILL)
    proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
