"""The monitor's last line for a run whose trainer died before it started: failed, with the log's
error line and what to do (a new run), never "press r to resume"."""

from __future__ import annotations

from tui.run_watch import Alert, RunView
from tui.screens.monitor import finished_line

LOG = ["=== loradeck 2026-11-30 13:30:33: python -m trainer.train_process /p/runs/r1",
       "error: /p/runs/r1/config.toml does not exist"]


def test_a_run_that_never_started_says_why_and_points_at_a_new_run():
    line = finished_line(RunView(run_id="r1", state="failed", log_tail=LOG))
    assert line == ("failed: the trainer exited before it started: /p/runs/r1/config.toml does not exist."
                    " Fix that, then start a new run")


def test_a_run_that_failed_while_training_still_offers_resume():
    view = RunView(run_id="r1", state="failed", finished_status="failed", log_tail=LOG,
                   alerts=[Alert("error", "nan", "loss is nan")])
    assert finished_line(view) == "failed: press r to resume from the last saved state"


def test_a_crash_still_offers_resume():
    assert "press r to resume" in finished_line(RunView(run_id="r1", state="crashed", log_tail=LOG))
