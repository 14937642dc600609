"""The runs screen: every run with its state; open in the monitor, stop, resume, export."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Static
from tui_runs_helpers import T0, ScreenApp, make_run, run_started, step_events, text_of

from loradeck.tui.screens.monitor import MonitorScreen
from loradeck.tui.screens.runs import RunsScreen
from tests.waiting import wait_until_async


def finished(status, t, **extra):
    return {"type": "run_finished", "time": t, "status": status, **extra}


@pytest.fixture
def four_runs(project):
    make_run(project, "20260101-000000-aaaa", [run_started("a")] + step_events(1, 10, 10)
             + [finished("completed", T0 + 10, output="/out/lora.safetensors")], state="completed")
    make_run(project, "20260102-000000-bbbb", [run_started("b", t=T0 + 100)] + step_events(1, 4, 10, t0=T0 + 100)
             + [finished("stopped", T0 + 110)], state="stopped")
    make_run(project, "20260103-000000-cccc", [run_started("c", t=T0 + 200)] + step_events(1, 2, 10, t0=T0 + 200)
             + [finished("failed", T0 + 210, message="loss became NaN")], state="failed")
    # the trainer died: status.json says running but its pid is gone, and no run_finished
    make_run(project, "20260104-000000-dddd", [run_started("d", t=T0 + 300)] + step_events(1, 6, 10, t0=T0 + 300),
             state="running")
    return project


def states(table: DataTable) -> dict[str, str]:
    return {str(table.get_cell(key, "run")): str(table.get_cell(key, "state")) for key in table.rows}


async def test_every_run_is_listed_newest_first_with_its_state(four_runs):
    app = ScreenApp(lambda: RunsScreen(four_runs))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 4, message="four rows")
        assert states(table) == {"20260104-000000-dddd": "crashed", "20260103-000000-cccc": "failed",
                                 "20260102-000000-bbbb": "stopped", "20260101-000000-aaaa": "completed"}
        assert [str(table.get_cell(k, "run")) for k in table.rows][0] == "20260104-000000-dddd"
        assert str(table.get_cell("20260102-000000-bbbb", "steps")) == "4/10"
        assert str(table.get_cell("20260101-000000-aaaa", "output")) == "lora.safetensors"
        assert "crashed" in text_of(app.screen.query_one("#runs-detail", Static))


async def test_enter_opens_the_selected_run_in_the_monitor(four_runs):
    app = ScreenApp(lambda: RunsScreen(four_runs))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 4, message="rows")
        await pilot.press("down", "enter")
        assert isinstance(app.screen, MonitorScreen)
        await wait_until_async(pilot, lambda: app.screen.view is not None, message="the monitor")
        assert app.screen.run_id == "20260103-000000-cccc" and app.screen.view.state == "failed"
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_a_state_change_on_disk_shows_up_without_a_keypress(four_runs):
    app = ScreenApp(lambda: RunsScreen(four_runs, refresh_seconds=0.1))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 4, message="rows")
        make_run(four_runs, "20260105-000000-eeee", [run_started("e", t=T0 + 400)], state="running")
        await wait_until_async(pilot, lambda: table.row_count == 5, message="the new run listed")


async def test_stop_and_resume_from_the_runs_screen(trainable, fake_trainer):
    from loradeck.trainer.runs import lifecycle as runs

    files = runs.create_run(trainable, {"max_train_steps": 1000})
    fake_trainer["steps"] = 5  # 5 slow steps: stopped long before it could complete
    fake_trainer["step_seconds"] = 10.0
    runs.start(files)
    app = ScreenApp(lambda: RunsScreen(trainable, refresh_seconds=0.1))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until_async(pilot,
                               lambda: screen.rows.get(files.run_id) and screen.rows[files.run_id].state == "running",
                               timeout=30, message="running")
        await pilot.press("r")  # a running run cannot be resumed: nothing happens but a notice
        await pilot.press("s", "y")
        await wait_until_async(pilot, lambda: screen.rows[files.run_id].state == "stopped",
                               timeout=30, message="stopped")
        fake_trainer["step_seconds"] = 0.02
        await pilot.press("r")
        await wait_until_async(pilot, lambda: screen.rows[files.run_id].state in ("running", "completed"), timeout=30,
                               message="resumed")
        await wait_until_async(pilot, lambda: screen.rows[files.run_id].state == "completed",
                               timeout=30, message="completed")
    assert len(fake_trainer["launched"]) == 2  # the start and the resume


async def test_export_asks_for_a_folder_and_reports_what_the_engine_says(four_runs, tmp_path):
    app = ScreenApp(lambda: RunsScreen(four_runs))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 4, message="rows")
        await pilot.press("e")  # the crashed run has no final LoRA and no checkpoints: a notice, no dialog
        assert isinstance(app.screen, RunsScreen)
        await pilot.press("down", "down", "down", "e")
        from loradeck.tui.screens.export_dialog import ExportScreen

        assert isinstance(app.screen, ExportScreen)
        app.screen.query_one("#export-dest").value = str(tmp_path / "loras")
        await pilot.press("enter", "enter", "enter")  # Enter walks folder → name → checkpoint, then exports
        await pilot.pause()
        # the folder does not exist: the dialog says so in place and stays open
        assert isinstance(app.screen, ExportScreen)
        assert "does not exist" in text_of(app.screen.query_one("#export-problem"))


async def test_a_stopped_runs_latest_checkpoint_is_offered_and_exported(four_runs, tmp_path):
    from loradeck.tui.screens.export_dialog import ExportScreen
    from tests.publish.tiny_models import write_lora

    stopped = four_runs.runs / "20260102-000000-bbbb"
    (stopped / "checkpoints").mkdir()
    write_lora(stopped / "checkpoints" / "lora-step00000004.safetensors", output_name="lora", trigger="sks")
    app = ScreenApp(lambda: RunsScreen(four_runs))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 4, message="rows")
        await pilot.press("down", "down")
        await wait_until_async(pilot, lambda: "e: export a checkpoint" in text_of(app.screen.query_one("#runs-detail")),
                               message="the hint that a checkpoint can be exported")
        await pilot.press("e")
        assert isinstance(app.screen, ExportScreen)
        assert app.screen.query_one("#export-checkpoint").value == "latest"
        (tmp_path / "loras").mkdir()
        app.screen.query_one("#export-dest").value = str(tmp_path / "loras")
        assert app.screen.query_one("#export-name").value == f"{four_runs.name}-step4"
        await pilot.press("enter", "enter", "enter")
        # the crafted config names no output_name: published under the project's name, with the step
        published = tmp_path / "loras" / f"{four_runs.name}-step4.safetensors"
        # Both files: the LoRA is written before its sidecar. A torch load check runs in a subprocess first.
        await wait_until_async(pilot, lambda: published.exists() and published.with_suffix(".json").exists(),
                               timeout=180, message="the checkpoint published with its .json")


async def test_every_column_fits_80_columns_lora_name_included(four_runs):
    app = ScreenApp(lambda: RunsScreen(four_runs))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 4, message="four rows")
        await pilot.pause()
        lines = ["".join(seg.text for seg in strip) for strip in app.screen._compositor.render_strips()]
        completed = next(line for line in lines if "20260101-000000-aaaa" in line)
        assert "lora.safetensors" in completed
        assert "Output" in next(line for line in lines if "Started" in line)


def footer(screen) -> str:
    strips = screen._compositor.render_strips()
    return "".join(segment.text for segment in strips[-1]) if strips else ""


async def test_the_footer_offers_stop_and_resume_only_where_the_selected_run_allows(four_runs):
    app = ScreenApp(lambda: RunsScreen(four_runs))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 4, message="four rows")
        table.move_cursor(row=table.get_row_index("20260101-000000-aaaa"))  # completed
        await wait_until_async(pilot, lambda: "e Export" in footer(screen) and "r Resume" not in footer(screen),
                               message="a completed run's footer")
        assert "s Stop" not in footer(screen)
        table.move_cursor(row=table.get_row_index("20260102-000000-bbbb"))  # stopped
        await wait_until_async(pilot, lambda: "r Resume" in footer(screen), message="a stopped run's footer")
        assert "s Stop" not in footer(screen)
