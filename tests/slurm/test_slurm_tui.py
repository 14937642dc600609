"""A Slurm run in the TUI: the runs screen and the monitor show queued/failed with Slurm's reason,
and the train form's Submit to Slurm toggle submits the run (scripted sbatch/squeue)."""

from __future__ import annotations

from textual.widgets import Checkbox, DataTable, Static

from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.slurm import batch as slurm
from loradeck.tui.screens.monitor import MonitorScreen
from loradeck.tui.screens.runs import RunsScreen
from tests.slurm.conftest import slurm_run
from tests.tui_runs.tui_runs_helpers import ScreenApp, text_of
from tests.waiting import wait_until_async


async def test_the_runs_screen_and_monitor_show_slurms_state_and_reason(project, scripted_slurm):
    files = slurm_run(project)
    scripted_slurm(squeue="1234|PENDING|Resources|\n")
    app = ScreenApp(lambda: RunsScreen(project))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 1, message="the run")
        assert str(table.get_cell(files.run_id, "state")) == "queued"
        await wait_until_async(pilot,
                               lambda: "PENDING: Resources" in text_of(app.screen.query_one("#runs-detail", Static)),
                               message="the pending reason")
        scripted_slurm(squeue="1234|NODE_FAIL|NodeDown|gpu-07\n")
        await wait_until_async(pilot, lambda: str(table.get_cell(files.run_id, "state")) == "failed", timeout=15,
                               message="the failed state")
        assert "Slurm: NODE_FAIL" in text_of(app.screen.query_one("#runs-detail", Static))

    scripted_slurm(squeue="1234|PENDING|Priority|\n")
    app = ScreenApp(lambda: MonitorScreen(project, files.run_id))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: app.screen.view is not None, message="the monitor")
        status = text_of(app.screen.query_one("#status", Static))
        assert "queued (Slurm job 1234, PENDING: Priority)" in status


async def test_the_form_submits_to_slurm_when_the_toggle_is_on(trainable_slurm, scripted_slurm):
    from loradeck.tui.screens.train_form import TrainFormScreen

    project = trainable_slurm
    app = ScreenApp(lambda: TrainFormScreen(project))
    async with app.run_test(size=(100, 40)) as pilot:
        toggle = app.screen.query_one("#slurm", Checkbox)
        assert toggle.display  # sbatch is on PATH
        toggle.value = True
        await pilot.pause()
        await pilot.press("ctrl+l")
        await wait_until_async(pilot, lambda: isinstance(app.screen, MonitorScreen), timeout=30, message="the monitor")
        files = RunFiles(project.runs / app.screen.run_id)
        record = slurm.read_record(files)
        assert record["jobs"][0]["id"] == "500" and record["jobs"][0]["reason"] == "submit"
        assert "sbatch --parsable" in scripted_slurm.log.read_text()


async def test_the_slurm_toggle_is_hidden_where_sbatch_is_missing(trainable_slurm, monkeypatch, tmp_path):
    from loradeck.tui.screens.train_form import TrainFormScreen

    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    app = ScreenApp(lambda: TrainFormScreen(trainable_slurm))
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        assert not app.screen.query_one("#slurm", Checkbox).display
