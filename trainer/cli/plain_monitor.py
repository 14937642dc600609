"""`loradeck monitor` without a terminal: a run's progress as plain lines, until it ends.

The TUI monitor needs a terminal; started from a pipe, cron or `ssh host loradeck monitor ...`
without a tty, it follows the run here instead: one line per event worth reading (steps at most
every few seconds of the run's own time), a poll that sleeps between reads, and the run's exit status
at the end (0 completed, 2 stopped, 1 failed or crashed), as `loradeck train` in the foreground.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from loradeck.trainer.events import EventReader
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.runs.states import ENDED

POLL_SECONDS = 1.0
STEP_EVERY_SECONDS = 5.0   # of event time: a replayed history is as sparse as a live one


def describe(event: dict[str, Any]) -> str | None:
    """One readable line for an event, or None for the ones a person does not need (gpu samples)."""
    kind = event.get("type")
    if kind == "step":
        loss = event.get("loss")
        loss_text = f"{loss:.4f}" if isinstance(loss, (int, float)) else "-"
        return f"step {event.get('step')}/{event.get('total_steps')}  loss {loss_text}"
    if kind == "run_started":
        return f"run started: {event.get('total_steps')} steps on {event.get('device') or '?'}"
    if kind in ("warning", "error"):
        label = f"error [{event.get('kind')}]" if kind == "error" else "warning"
        hint = f" ({event['hint']})" if event.get("hint") else ""
        return f"{label}: {event.get('message')}{hint}"
    if kind in ("checkpoint", "sample"):
        return f"{kind} at step {event.get('step')}: {event.get('path')}"
    if kind == "run_finished":
        return f"run {event.get('status')} after {event.get('steps_done')} steps" + (
            f": {event['output']}" if event.get("output") else "")
    return None


def follow(files: RunFiles, write: Callable[[str], None] = print, *, poll: float = POLL_SECONDS) -> int:
    """Print the run's events from the start, then new ones as they come, until the run has ended;
    returns its exit status. Sleeps `poll` seconds between reads: idle, it uses next to no CPU."""
    reader = EventReader(files.events)
    last_step_time = float("-inf")

    def drain() -> None:
        nonlocal last_step_time
        for event in reader.read_new():
            if event.get("type") == "step":
                t = event.get("time") if isinstance(event.get("time"), (int, float)) else time.time()
                final = event.get("step") == event.get("total_steps")
                if t - last_step_time < STEP_EVERY_SECONDS and not final:
                    continue
                last_step_time = t
            line = describe(event)
            if line:
                write(line)

    write(f"following run {files.run_id} (no terminal: plain lines; Ctrl-C stops following, not the run)")
    while True:
        drain()
        state = runs.run_state(files)
        if state in ENDED and runs.lingering_pid(files) is None:
            drain()  # what it wrote just before it ended
            info = runs.run_info(files)
            total = f"/{info.total_steps}" if info.total_steps else ""
            write(f"run {files.run_id} {state} at step {info.step}{total}"
                  + (f": {info.message}" if info.message and state != "completed" else ""))
            return runs.exit_code(state)
        time.sleep(poll)
