"""A trainer that died before it started: telling it apart from a crash, and saying why.

The trainer process writes its first heartbeat (status.json) before it does anything else; only a
start-up failure leaves none: a run folder it cannot read (exit status 2, `error: ...`), a broken
install (an import error's traceback). Such a run is `failed`, not `crashed`: nothing was trained
and nothing was saved, so resume cannot help it; the reason is in train.log, after the launcher's
`=== loradeck ...` header line for that launch.

Pure Python and no torch: the CLI and the TUI both use it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

LAUNCH_HEADER = "=== loradeck "
_TAIL_BYTES = 64 * 1024
# The last line of a Python traceback: `ModuleNotFoundError: No module named 'x'`.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")

NEVER_STARTED = "the trainer exited before it started"


def never_started(launch_rec: dict | None, status: dict | None, started_event: dict | None,
                  t_launch: float, log: Path) -> bool:
    """True when the newest launch left no trace of a running trainer (no heartbeat and no
    run_started since it) and its output in `log` says why. Only meaningful once the launched
    process is known to be gone. A process that vanished without a word (killed at once) is not
    this: it stays `crashed`, resumable from whatever state an earlier launch saved."""
    if not launch_rec:
        return False
    beat = status.get("heartbeat") if status else None
    if isinstance(beat, (int, float)) and beat >= t_launch:
        return False
    started = started_event.get("time") if started_event else None
    if isinstance(started, (int, float)) and started >= t_launch:
        return False
    return error_line(last_launch_lines(log)) is not None


def last_launch_lines(log: Path) -> list[str]:
    """The lines train.log holds for the newest launch (after its header); [] when unreadable."""
    try:
        with open(log, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - _TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith(LAUNCH_HEADER):
            return lines[i + 1:]
    return lines


def error_line(lines: Iterable[str]) -> str | None:
    """The line that says why a process failed, from its output (after the newest launch header,
    when `lines` hold one): its `error: ...` line (without the prefix), else a traceback's final
    exception line, else its last non-empty line; None for no output."""
    text = [ln.strip() for ln in lines if ln.strip()]
    headers = [i for i, ln in enumerate(text) if ln.startswith(LAUNCH_HEADER)]
    if headers:
        text = text[headers[-1] + 1:]
    for ln in reversed(text):
        if ln.startswith("error:"):
            return ln[len("error:"):].strip()
    for ln in reversed(text):
        if _EXCEPTION_LINE.match(ln):
            return ln
    return text[-1] if text else None


def describe(log: Path) -> str:
    """`the trainer exited before it started: <the log's error line>`."""
    return describe_lines(last_launch_lines(log))


def describe_lines(lines: Iterable[str]) -> str:
    """`describe` from lines of train.log already read (the monitor's log tail)."""
    line = error_line(lines)
    return f"{NEVER_STARTED}: {line}" if line else f"{NEVER_STARTED} (see train.log)"
