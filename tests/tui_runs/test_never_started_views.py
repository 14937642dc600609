"""The monitor's last line for a run whose trainer died before it started: failed, with the log's
error line and what to do (a new run), never "press r to resume"."""

from __future__ import annotations

from loradeck.tui.run_watch import Alert, RunView
from loradeck.tui.screens.monitor import finished_line
from tests.waiting import wait_until_async

LOG = ["=== loradeck 2026-11-30 13:30:33: python -m loradeck.trainer.train.process /p/runs/r1",
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


async def test_the_runs_screen_shows_a_run_that_never_started_as_failed_with_its_reason(trainable, monkeypatch):
    from textual.widgets import DataTable, Static
    from tui_runs_helpers import ScreenApp, text_of

    from loradeck.trainer.runs import lifecycle as runs
    from loradeck.tui.screens.runs import RunsScreen

    monkeypatch.setattr(runs, "TRAIN_MODULE", "tests.runs.no_such_trainer_module")  # a broken install
    files = runs.create_run(trainable, {"max_train_steps": 2, "resolution": 64})
    runs.launch(files).wait()
    app = ScreenApp(lambda: RunsScreen(trainable))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 1, message="the row")
        assert str(table.get_cell(files.run_id, "state")) == "failed"
        detail = text_of(app.screen.query_one("#runs-detail", Static))
        assert "the trainer exited before it started" in detail and "No module named" in detail
        assert "start a new run" in detail and "r: resume" not in detail
