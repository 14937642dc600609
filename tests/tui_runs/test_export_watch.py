"""An export worker hears the load check's phases as notices, and cancelling the worker stops the check."""

from __future__ import annotations

import threading

from textual import work
from textual.screen import Screen
from textual.widgets import Static
from tui_runs_helpers import ScreenApp

from loradeck.tui.run_actions import watched_export
from tests.waiting import wait_until_async

PHASE = {"type": "progress", "task": "validate", "done": 0, "total": 3, "message": "loading base model"}


class ExportingScreen(Screen):
    """Stands in for a screen whose export worker runs the load check (run_actions.export)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, bool] = {}
        self.reported, self.resume = threading.Event(), threading.Event()

    def compose(self):
        yield Static("exporting")

    @work(thread=True, exit_on_error=False)
    def export(self) -> None:
        watch = watched_export(self)
        self.seen["stop before cancel"] = watch["should_stop"]()
        watch["on_event"](PHASE)
        self.reported.set()
        self.resume.wait(30)
        self.seen["stop after cancel"] = watch["should_stop"]()


async def test_phases_become_notices_and_a_cancelled_worker_stops_the_check():
    app = ScreenApp(ExportingScreen)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await wait_until_async(pilot, lambda: isinstance(app.screen, ExportingScreen), message="the screen")
        screen = app.screen
        worker = screen.export()
        await wait_until_async(pilot, screen.reported.is_set, message="the first phase reported")
        await wait_until_async(pilot, lambda: any("validating: loading base model" in n.message
                                                  for n in app._notifications),
                               message="the phase shown as a notice")
        worker.cancel()
        screen.resume.set()
        await wait_until_async(pilot, lambda: "stop after cancel" in screen.seen, message="the worker checking again")
        assert screen.seen == {"stop before cancel": False, "stop after cancel": True}
