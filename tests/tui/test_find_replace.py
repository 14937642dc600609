"""Find/replace: the preview never outlives the inputs it was made for, and a bad pattern is said in
place (no modal over the field being typed in); ticked options read without colour."""

from __future__ import annotations

from textual.widgets import DataTable, Input

from loradeck.tui.widgets.tick_box import TickBox
from tests.tui.conftest import make_app, wait_screen
from tests.waiting import wait_until_async


async def open_dialog(pilot):
    await wait_screen(pilot, "DatasetScreen")
    await pilot.press("f")
    return await wait_screen(pilot, "FindReplaceScreen")


async def test_changing_the_find_text_clears_the_old_preview(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot)
        await pilot.press(*"gradient", "enter")
        table = dialog.query_one("#replace-preview", DataTable)
        await wait_until_async(pilot, lambda: table.row_count > 0, message="preview rows")
        await pilot.press("backspace")  # "gradien": the rows shown were for "gradient"
        await pilot.pause()
        assert table.row_count == 0
        assert dialog.query_one("#replace-apply").disabled
        assert "Enter previews" in str(dialog.query_one("#replace-status").render())
        await pilot.press("t", "enter")
        await wait_until_async(pilot, lambda: table.row_count > 0, message="new preview")


async def test_an_invalid_regex_is_reported_inline_without_a_modal(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot)
        await pilot.click("#replace-regex")
        dialog.query_one("#replace-find", Input).focus()
        await pilot.press(*"(gradient")
        await pilot.pause()
        status = dialog.query_one("#replace-status")
        assert "invalid regular expression" in str(status.render())  # while typing, before Enter
        assert status.has_class("form-error")
        await pilot.press("enter")
        await pilot.pause(0.3)
        assert app.screen is dialog  # no error modal on top
        assert "invalid regular expression" in str(status.render())
        assert dialog.query_one("#replace-preview", DataTable).row_count == 0
        # A replacement naming a group the pattern lacks: the engine's refusal, also in place.
        await pilot.press(")")
        dialog.query_one("#replace-with", Input).value = r"\2"
        await pilot.press("enter")
        await wait_until_async(pilot, lambda: "invalid replacement" in str(status.render()), message="inline refusal")
        assert app.screen is dialog
        dialog.query_one("#replace-with", Input).value = r"\1s"  # fixed: the message goes
        await pilot.pause()
        assert not status.has_class("form-error")
        await pilot.press("enter")
        await wait_until_async(pilot, lambda: not dialog.query_one("#replace-apply").disabled, message="preview")


async def test_ticked_and_unticked_boxes_differ_in_their_text_not_only_colour(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot)
        box = dialog.query_one("#replace-regex", TickBox)
        assert not box.value and "[ ]" in str(box.render()) and "[x]" not in str(box.render())
        box.value = True
        await pilot.pause()
        assert "[x]" in str(box.render())
