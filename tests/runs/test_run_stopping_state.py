"""RunState `stopping`: a live trainer that was asked to stop reads as stopping until it has saved and
reported its end (the trainer writes state="stopping" to status.json when the stop arrives)."""

from __future__ import annotations

import json

import pytest

from loradeck.trainer.cli import plain_monitor
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs import live as live_runs
from loradeck.trainer.runs.files import STATUS_STATES, write_status
from loradeck.trainer.runs.states import ACTIVE, ENDED, LIVE, RunState
from tests.runs.test_run_state import dead_pid, emit, started, trainer_like_process


@pytest.fixture
def run(project):
    return runs.create_run(project, {"max_train_steps": 4, "resolution": 64})


def test_a_live_trainer_saving_on_its_way_out_reads_stopping(run, reap, project):
    proc = trainer_like_process(run, reap)
    started(run)
    write_status(run, pid=proc.pid, state="stopping")
    assert runs.run_state(run) == RunState.STOPPING == "stopping"
    assert runs.run_state(run) in ACTIVE and runs.run_state(run) in LIVE
    # The listing (`loradeck runs --json`) says it in plain JSON, and the run counts as live.
    [info] = runs.list_runs(project)
    assert json.loads(json.dumps(info.to_dict()))["state"] == "stopping"
    assert [r.run_id for r in live_runs.live_runs(project)] == [run.run_id]
    # Its end decides once reported.
    emit(run, "run_finished", status="stopped")
    assert runs.run_state(run) == "stopped" and runs.run_state(run) in ENDED


def test_a_stopping_trainer_that_died_reads_crashed(run):
    started(run)
    write_status(run, pid=dead_pid(), state="stopping")
    assert runs.run_state(run) == "crashed"


def test_the_state_groups_come_from_run_state():
    assert set(STATUS_STATES) == set(RunState) - {RunState.QUEUED, RunState.CRASHED}
    assert plain_monitor.ENDED == ENDED
    assert set(LIVE) | set(ENDED) == set(RunState)
