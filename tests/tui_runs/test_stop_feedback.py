"""Stopping a run on a slow step: the monitor and the runs screen say "stopping (finishing step N)"
at once, a second `s` offers force-stop, and every hint is a complete command or key; the keys
offered follow the run's state; the runs screen follows a new run (issue 12, items 4 and 13)."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Static
from tui_runs_helpers import T0, ScreenApp, make_run, run_started, step_events, text_of

from loradeck.trainer.dataset.project import create_project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs import lifecycle as runs
from loradeck.tui import run_actions
from loradeck.tui.screens.confirm import ConfirmScreen
from loradeck.tui.screens.monitor import MonitorScreen
from loradeck.tui.screens.runs import RunsScreen
from tests.waiting import wait_until_async


def footer(screen) -> str:
    strips = screen._compositor.render_strips()
    return "".join(segment.text for segment in strips[-1]) if strips else ""


@pytest.fixture
def slow_run(trainable, fake_trainer):
    """A live run whose steps take 30 s, as on a CPU: a stop waits for the step to finish."""
    fake_trainer["step_seconds"] = 30
    files = runs.create_run(trainable, {"max_train_steps": 100})
    runs.start(files)
    return files


async def test_the_monitor_says_stopping_at_once_and_a_second_press_force_stops(trainable, slow_run):
    app = ScreenApp(lambda: MonitorScreen(trainable, slow_run.run_id, poll_interval=0.05))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until_async(pilot, lambda: screen.view is not None and screen.view.state == "running", timeout=30,
                               message="the run to start")
        await pilot.press("s", "y")
        # At once: well before the 30 s step ends.
        await wait_until_async(pilot,
                               lambda: "stopping (finishing step 1)" in text_of(screen.query_one("#status", Static)),
                               timeout=5, message="the monitor to say stopping")
        assert "s again: force-stop" in text_of(screen.query_one("#finished", Static))
        assert runs.run_state(slow_run) == "running"  # still finishing its 30 s step
        await pilot.press("s")
        await wait_until_async(pilot, lambda: isinstance(app.screen, ConfirmScreen), message="the force-stop question")
        assert "Force-stop" in text_of(app.screen.query_one("#confirm-question", Static))
        await pilot.press("y")
        await wait_until_async(pilot, lambda: not screen.view.is_live, timeout=15, message="the forced stop")
        assert screen.view.state == "crashed"  # killed mid-step: resumable from its last saved state
        assert "stopping" not in text_of(screen.query_one("#status", Static))
        await wait_until_async(pilot, lambda: "r Resume" in footer(screen), message="the footer offering resume")
        assert "s Stop" not in footer(screen)


async def test_the_runs_screen_says_stopping_at_once_and_offers_force_stop(trainable, slow_run):
    app = ScreenApp(lambda: RunsScreen(trainable, refresh_seconds=0.2))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: screen.rows.get(slow_run.run_id) is not None
                               and screen.rows[slow_run.run_id].state == "running",
                               timeout=30, message="the running row")
        await pilot.press("s", "y")
        # At once: well before the 30 s step ends.
        await wait_until_async(pilot, lambda: str(table.get_cell(slow_run.run_id, "state")) == "stopping", timeout=5,
                               message="the row to say stopping")
        detail = text_of(screen.query_one("#runs-detail", Static))
        assert "stopping (finishing step 1)" in detail and "s again: force-stop" in detail
        await pilot.pause(0.6)  # refreshes while the stop waits keep saying so
        assert str(table.get_cell(slow_run.run_id, "state")) == "stopping"
        await pilot.press("s")
        await wait_until_async(pilot, lambda: isinstance(app.screen, ConfirmScreen), message="the force-stop question")
        await pilot.press("y")
        await wait_until_async(pilot, lambda: str(table.get_cell(slow_run.run_id, "state")) == "crashed", timeout=15,
                               message="the forced stop")


def test_a_stop_that_times_out_names_the_key_and_the_complete_command(root, monkeypatch):
    project = create_project("qa cats", root, base_model="synthetic:tiny")
    files = make_run(project, "20260101-000000-aaaa", [run_started("a")], state="running")
    monkeypatch.setattr(runs, "stop", lambda files, **kw: {"ok": False, "state": "running"})
    with pytest.raises(LoradeckError) as caught:
        run_actions.stop(files)
    hint = caught.value.hint
    assert "press s again to force-stop" in hint
    assert "loradeck stop 'qa cats' 20260101-000000-aaaa --force" in hint


def finished(status, t, **extra):
    return {"type": "run_finished", "time": t, "status": status, **extra}


async def test_the_monitor_offers_only_the_keys_the_runs_state_allows(project):
    make_run(project, "done", [run_started("done")] + step_events(1, 5, 5) + [finished("completed", T0 + 10)],
             state="completed")
    make_run(project, "halted", [run_started("halted")] + step_events(1, 3, 5) + [finished("stopped", T0 + 10)],
             state="stopped")
    for run_id, shown, hidden in (("done", [], ["s Stop", "r Resume"]), ("halted", ["r Resume"], ["s Stop"])):
        app = ScreenApp(lambda: MonitorScreen(project, run_id, poll_interval=0.05))
        async with app.run_test(size=(80, 24)) as pilot:
            screen = app.screen
            await wait_until_async(pilot, lambda: screen.view is not None, message="the view")
            await wait_until_async(pilot, lambda: "l Log" in footer(screen), message="the footer")
            for key in shown:  # the footer's keys follow the view, one refresh after it arrives
                await wait_until_async(pilot, lambda: key in footer(screen), message=f"{key} for {run_id}")
            for key in hidden:
                assert key not in footer(screen), (run_id, footer(screen))
            assert "l Log" in footer(screen) and "u Runs" in footer(screen)


async def test_the_runs_screen_moves_its_cursor_to_a_new_run(project):
    make_run(project, "20260101-000000-aaaa", [run_started("a")] + step_events(1, 5, 5)
             + [finished("completed", T0 + 10)], state="completed")
    make_run(project, "20260102-000000-bbbb", [run_started("b", t=T0 + 100)] + step_events(1, 5, 5, t0=T0 + 100)
             + [finished("completed", T0 + 110)], state="completed")
    app = ScreenApp(lambda: RunsScreen(project, refresh_seconds=0.1))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 2, message="two rows")
        await pilot.press("down")
        assert screen.selected_run_id() == "20260101-000000-aaaa"
        make_run(project, "20260103-000000-cccc", [run_started("c", t=T0 + 200)]
                 + step_events(1, 2, 5, t0=T0 + 200) + [finished("stopped", T0 + 210)], state="stopped")
        await wait_until_async(pilot, lambda: table.row_count == 3, message="the new run's row")
        assert screen.selected_run_id() == "20260103-000000-cccc"
        await pilot.press("down")  # later refreshes leave the cursor where the user puts it
        await pilot.pause(0.4)
        assert screen.selected_run_id() == "20260102-000000-bbbb"


async def test_the_monitor_names_form_fields_in_an_error_hint_not_cli_flags(project):
    make_run(project, "oom", [run_started("oom")] + step_events(1, 3, 10) + [
        {"type": "error", "time": T0 + 5, "kind": "oom", "message": "CUDA out of memory",
         "hint": "enable gradient checkpointing (--gradient-checkpointing); use --optimizer adamw8bit"},
        finished("failed", T0 + 5)], state="failed")
    app = ScreenApp(lambda: MonitorScreen(project, "oom", poll_interval=0.05))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_until_async(pilot, lambda: screen.view is not None and screen.view.state == "failed",
                               message="the view")
        alerts = await wait_until_async(pilot, lambda: text_of(screen.query_one("#alerts", Static)),
                                        message="the alerts")
        assert "--" not in alerts
        assert "“Gradient checkpointing”" in alerts and "“Optimizer” adamw8bit" in alerts


async def test_the_run_screens_footers_keep_every_shown_key_and_the_palette_at_80_columns(project):
    from loradeck.tui.app import LoradeckApp

    make_run(project, "halted", [run_started("halted")] + step_events(1, 3, 5) + [finished("stopped", T0 + 10)],
             state="stopped")
    app = LoradeckApp(project.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: type(app.screen).__name__ == "ProjectsScreen", message="the projects")
        # A stopped run is selected: Resume, not Stop (the runs screen's keys follow the selected run).
        for screen, keys in ((RunsScreen(project), ("m Monitor", "r Resume", "e Export", "t New run")),
                             (MonitorScreen(project, "halted"), ("r Resume", "l Log", "u Runs"))):
            app.push_screen(screen)
            await wait_until_async(pilot, lambda: keys[-1] in footer(app.screen), message=f"the footer of {screen}")
            line = footer(app.screen)
            for key in keys + ("^q Quit", "f1 Help", "^p palette"):
                assert key in line, line
            app.pop_screen()
            await pilot.pause()
