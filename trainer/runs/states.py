"""A run's state: every value it can take and the groups readers ask about, in one place.

The engine (`runs.lifecycle.run_state`), the CLI and the TUI all use these; nobody spells a state
list of their own.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    QUEUED = "queued"        # waiting in the run queue to start by itself (trainer.runs.queue)
    STARTING = "starting"    # launched; the trainer is loading
    RUNNING = "running"      # training steps
    STOPPING = "stopping"    # a stop was asked; the trainer is saving its state on the way out
    COMPLETED = "completed"  # reached its last step
    STOPPED = "stopped"      # stopped on request, state saved: resumable
    FAILED = "failed"        # ended with an error it reported (or never started)
    CRASHED = "crashed"      # died without a word (killed, OOM-killed, host gone)


# The groups are tuples in RunState order (callers print and concatenate them); members compare
# equal to their strings, so `"running" in ACTIVE` holds.
# A trainer process is, or should be, alive.
ACTIVE = (RunState.STARTING, RunState.RUNNING, RunState.STOPPING)
# Not over yet: it may still change by itself.
LIVE = (RunState.QUEUED, *ACTIVE)
# Ended, as the trainer itself reported it.
FINISHED = (RunState.COMPLETED, RunState.STOPPED, RunState.FAILED)
# Ended, whoever said so.
ENDED = (*FINISHED, RunState.CRASHED)
