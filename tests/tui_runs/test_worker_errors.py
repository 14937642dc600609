"""Run screens (train form, monitor, runs) report a failed worker through the app's one error modal."""

from __future__ import annotations

import pytest
from tui_runs_helpers import make_run, run_started, step_events

from loradeck.tui.app import LoradeckApp
from loradeck.tui.screens.error import ErrorScreen
from loradeck.tui.screens.monitor import MonitorScreen
from tests.waiting import wait_until_async


async def test_a_crashing_run_watcher_opens_the_error_modal(project, monkeypatch):
    from loradeck.tui import run_watch

    def broken(self):
        raise RuntimeError("the watcher broke")

    monkeypatch.setattr(run_watch.RunWatcher, "run", broken)
    make_run(project, "20260101-000000-aaaa", [run_started("a")] + step_events(1, 5, 10), state="stopped")
    app = LoradeckApp(project.root, monitor=("cats", None))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: isinstance(app.screen, ErrorScreen), message="the error modal")
        assert "the watcher broke" in app.screen.message
        assert isinstance(app.screen_stack[-2], MonitorScreen)


@pytest.mark.parametrize("opener", ["open_train", "open_runs"])
async def test_a_failing_worker_of_the_train_form_or_runs_screen_opens_the_error_modal(trainable, opener):
    app = LoradeckApp(trainable.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        getattr(app, opener)(trainable)
        await pilot.pause()
        screen = app.screen

        def boom():
            raise RuntimeError("worker bug")

        screen.run_worker(boom, thread=True, exit_on_error=False, description="background check")
        await wait_until_async(pilot, lambda: isinstance(app.screen, ErrorScreen), message="the error modal")
        assert app.screen.error_title == "background check failed (unexpected)"
        assert app.screen_stack[-2] is screen
