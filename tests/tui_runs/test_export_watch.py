"""An export worker hears the load check's phases as notices, and cancelling the worker stops the check."""

from __future__ import annotations

import threading

from textual import work
from textual.screen import Screen
from textual.widgets import Static
from tui_runs_helpers import ScreenApp, wait_for

from loradeck.tui.run_actions import watched_export

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
        await wait_for(pilot, lambda: isinstance(app.screen, ExportingScreen), what="the screen")
        screen = app.screen
        worker = screen.export()
        await wait_for(pilot, screen.reported.is_set, what="the first phase reported")
        await wait_for(pilot, lambda: any("validating: loading base model" in n.message for n in app._notifications),
                       what="the phase shown as a notice")
        worker.cancel()
        screen.resume.set()
        await wait_for(pilot, lambda: "stop after cancel" in screen.seen, what="the worker checking again")
        assert screen.seen == {"stop before cancel": False, "stop after cancel": True}
