"""The TUI's one run-state style table covers every RunState, in both of its looks."""

from __future__ import annotations

from loradeck.trainer.runs.states import RunState
from loradeck.tui.run_state_text import COLOUR, state_style, state_text, stopping_text


def test_every_state_has_a_colour():
    assert set(COLOUR) == set(RunState)


def test_the_monitor_shows_every_state_bold_and_the_list_only_the_loud_ones():
    assert state_style("stopped", bold=True) == "bold magenta"
    assert state_style("stopped") == "magenta"
    assert state_style("failed") == "bold red" and state_style("running") == "bold green"
    assert state_style("no-such-state", bold=True) == "bold" and state_style("no-such-state") == ""
    assert state_text("queued").style == "yellow"
    assert stopping_text(7) == "stopping (finishing step 7)"
