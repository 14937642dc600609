"""How a run's state looks in the TUI: the one style table, keyed by RunState (loradeck.trainer.runs.states).

The monitor's status line shows the state bold in its colour; the runs list keeps the calm states
plain and marks only what is going on or went wrong (running, failed, crashed).
"""

from __future__ import annotations

from rich.text import Text

from loradeck.trainer.runs.states import RunState

COLOUR: dict[RunState, str] = {
    RunState.QUEUED: "yellow", RunState.STARTING: "yellow", RunState.RUNNING: "green",
    RunState.STOPPING: "yellow", RunState.COMPLETED: "cyan", RunState.STOPPED: "magenta",
    RunState.FAILED: "red", RunState.CRASHED: "red",
}
LOUD = frozenset({RunState.RUNNING, RunState.FAILED, RunState.CRASHED})


def state_style(state: str, *, bold: bool = False) -> str:
    """The Rich style of `state`: its colour, bold when it is loud or `bold` asks; an unknown state
    has no colour."""
    colour = COLOUR.get(state)
    if colour is None:
        return "bold" if bold else ""
    return f"bold {colour}" if bold or state in LOUD else colour


def state_text(state: str, *, bold: bool = False) -> Text:
    return Text(state, style=state_style(state, bold=bold))


def stopping_text(step: int) -> str:
    """A live run asked to stop, while it finishes its step (shown in place of its state)."""
    return f"stopping (finishing step {step})"
