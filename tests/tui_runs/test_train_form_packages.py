"""The train form on a box without the `gpu` extra: xformers is replaced by sdpa with a warning
(launch stays possible), adamw8bit is a problem that names the extra and blocks launch."""

from __future__ import annotations

from textual.widgets import Button, Select, Static
from tui_runs_helpers import ScreenApp, text_of

from loradeck.trainer.train import optional_packages
from loradeck.tui.screens.train_form import TrainFormScreen


async def test_form_warns_about_xformers_and_refuses_adamw8bit_without_their_packages(trainable, monkeypatch):
    monkeypatch.setattr(optional_packages, "installed", lambda name: name not in ("xformers", "bitsandbytes"))
    app = ScreenApp(lambda: TrainFormScreen(trainable))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        screen.query_one("#f-attention", Select).value = "xformers"
        await pilot.pause()
        steps = text_of(screen.query_one("#steps", Static))
        assert "xformers package is not installed; using sdpa instead" in steps
        assert screen.config is not None and not screen.query_one("#launch", Button).disabled
        screen.query_one("#f-optimizer", Select).value = "adamw8bit"
        await pilot.pause()
        problems = text_of(screen.query_one("#problems", Static))
        assert "adamw8bit needs bitsandbytes" in problems and "pip install 'loradeck[gpu]'" in problems
        assert screen.config is None and screen.query_one("#launch", Button).disabled
