"""The captioning model in the TUI: a field before captioning, saved in project.toml, and a cancel
while the model loads that is prompt and reads as stopped."""

from __future__ import annotations

import select
import socket
import time

from textual.widgets import Input

from loradeck.trainer.config import project_settings as settings_mod
from loradeck.tui.messages import TaskDone
from loradeck.tui.widgets.image_list import ImageList
from tests.tui.conftest import make_app, wait_screen
from tests.waiting import wait_until_async


async def open_caption_dialog(pilot):
    screen = await wait_screen(pilot, "DatasetScreen")
    await wait_until_async(pilot, lambda: len(screen.query_one(ImageList).entries) == 12, message="listing")
    await pilot.press("c", "b")  # BLIP (WD14 is the other captioner), then its model
    return screen, await wait_screen(pilot, "CaptionDialog")


async def test_the_model_field_is_saved_in_project_toml_and_used(root, demo, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(root.parent / "empty-hf-cache"))
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen, dialog = await open_caption_dialog(pilot)
        field = dialog.query_one("#caption-model", Input)
        assert field.value == "synthetic:blip-tiny"  # the demo's (synthetic) default, shown
        field.value = str(root / "no-such-folder")
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is dialog and "is not a folder" in str(dialog.query_one("#caption-problem").render())
        field.value = "./my blip"  # named as typed: a path with spaces reads as one thing
        await pilot.press("enter")
        await pilot.pause()
        assert "“./my blip” is not a folder" in str(dialog.query_one("#caption-problem").render())
        field.value = "someone/their-blip"
        await pilot.press("enter")
        error = await wait_screen(pilot, "ErrorScreen", timeout=60)
        # The engine got the field's model and refused it at once (offline, not cached), saying how to fix it.
        assert "someone/their-blip" in error.message and "HF_HUB_OFFLINE" in error.message
        assert "local folder" in error.message
        # The way out is the dialog's Model field, not the CLI's --model flag.
        assert "--model" not in error.message + (error.hint or "")
        assert "“Model”" in error.message and "caption dialog" in error.message
        assert settings_mod.load(demo.settings_file).caption.model == "someone/their-blip"
        await pilot.press("escape")
        screen, dialog = await open_caption_dialog(pilot)
        assert dialog.query_one("#caption-model", Input).value == "someone/their-blip"  # remembered


async def test_cancel_while_the_model_loads_is_prompt_and_reads_stopped(root, demo, monkeypatch):
    # A hub that accepts connections and never answers: loading would hang in retries for long.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setenv("HF_HUB_CACHE", str(root.parent / "empty-hf-cache"))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    seen = []
    app = make_app(root, open_name="demo")
    try:
        async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
            screen, dialog = await open_caption_dialog(pilot)
            dialog.query_one("#caption-model", Input).value = "someone/slow-blip"
            await pilot.press("enter")
            label = screen.query_one("#task-label")
            await wait_until_async(pilot, lambda: "loading" in str(label.render()), timeout=60, message="model loading")
            # Into the load: the caption process is waiting on the silent hub (a connection is pending on it).
            await wait_until_async(pilot, lambda: select.select([silent], [], [], 0)[0], timeout=60,
                                   message="a request to the silent hub")
            await pilot.press("x")
            pressed = time.monotonic()
            await wait_until_async(pilot, lambda: any(isinstance(m, TaskDone) for m in seen), timeout=60,
                                   message="the task to end")
            took = time.monotonic() - pressed
            done = next(m for m in seen if isinstance(m, TaskDone))
            assert done.status == "stopped", done
            assert type(app.screen).__name__ == "DatasetScreen"  # no error modal
            assert took < 10, f"took {took:.1f} s"
    finally:
        silent.close()
