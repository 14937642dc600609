"""The train form shows every config problem at once, as `loradeck train` reports them (item 12.5)."""

from __future__ import annotations

from textual.widgets import Input, Static
from tui_runs_helpers import ScreenApp, text_of

from loradeck.tui.screens.train_form import TrainFormScreen


async def test_a_bad_batch_size_and_a_bad_resolution_are_both_shown_under_their_fields(trainable):
    app = ScreenApp(lambda: TrainFormScreen(trainable))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        screen.query_one("#f-batch_size", Input).value = "0"
        screen.query_one("#f-resolution", Input).value = "7"
        await pilot.pause()
        await pilot.pause()
        assert text_of(screen.query_one("#err-batch_size", Static)) == "must be at least 1"
        assert text_of(screen.query_one("#err-resolution", Static)) == "must be a multiple of 8"
        assert "2 problems" in text_of(screen.query_one("#steps", Static))
