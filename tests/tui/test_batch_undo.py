"""Undo in the TUI: Ctrl+Z on the dataset screen undoes the last batch caption edit (several levels,
hand edits kept and reported); the caption editor keeps each image's undo history across moves."""

from __future__ import annotations

from loradeck.trainer.dataset import caption_ops
from loradeck.trainer.dataset.caption_store import read_caption, write_caption
from tests.tui.conftest import make_app, wait_screen
from tests.waiting import wait_until_async


def captions(demo) -> dict[str, str | None]:
    return {p.name: p.read_text() for p in sorted(demo.dataset.glob("*.txt"))}


async def test_ctrl_z_on_the_dataset_screen_undoes_batches_and_keeps_hand_edits(root, demo):
    original = captions(demo)
    caption_ops.replace_text(demo, "circle", "disc")
    after_first = captions(demo)
    changed = caption_ops.replace_text(demo, "zxq style", "qqq look")
    hand_edited = changed.changes[0].caption_file
    write_caption(demo.dataset / changed.changes[0].image, "written by hand")
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        await wait_until_async(pilot, lambda: len(screen.query_one("#dataset-list").entries) == 12)
        notes = []
        app.notify = lambda message, **kw: notes.append(message)  # what the user is told
        await pilot.press("ctrl+z")
        await wait_until_async(pilot, lambda: notes, message="undo notification")
        assert "1 edited since, kept: " + hand_edited in notes[0]
        expected = dict(after_first, **{hand_edited: "written by hand\n"})
        assert captions(demo) == expected
        await pilot.press("ctrl+z")
        await wait_until_async(pilot, lambda: len(notes) == 2, message="second undo")
        assert captions(demo) == dict(original, **{hand_edited: "written by hand\n"})
        await pilot.press("ctrl+z")  # nothing left: said in the error modal, nothing changes
        await wait_screen(pilot, "ErrorScreen")
        assert captions(demo) == dict(original, **{hand_edited: "written by hand\n"})


async def test_editor_undo_history_survives_moving_to_the_next_image_and_back(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        await wait_until_async(pilot, lambda: len(screen.query_one("#dataset-list").entries) == 12)
        await pilot.press("enter")
        editor = await wait_screen(pilot, "CaptionEditorScreen")
        original = editor.area.text
        await pilot.press("end", *", first edit")
        await pilot.press("pagedown")
        await pilot.pause()
        assert editor.entry.name == "shape_01.png"
        other = editor.area.text
        await pilot.press("end", *", second")
        await pilot.press("ctrl+z")
        assert editor.area.text == other  # this image's own history
        await pilot.press("ctrl+z")
        assert editor.area.text == other  # nothing of shape_00's history leaks here
        await pilot.press("pageup")
        await pilot.pause()
        assert editor.entry.name == "shape_00.png" and editor.area.text == original + ", first edit"
        await pilot.press("ctrl+z")
        assert editor.area.text == original
        await wait_until_async(pilot, lambda: read_caption(demo.dataset / "shape_00.png") == original, timeout=5,
                               message="autosave of the undone text")
        await pilot.press("ctrl+y")
        assert editor.area.text == original + ", first edit"


async def test_a_caption_changed_on_disk_while_away_comes_back_as_one_more_undoable_edit(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        await wait_until_async(pilot, lambda: len(screen.query_one("#dataset-list").entries) == 12)
        await pilot.press("enter")
        editor = await wait_screen(pilot, "CaptionEditorScreen")
        original = editor.area.text
        await pilot.press("end", *", mine")
        await pilot.press("pagedown")
        await pilot.pause()
        caption_ops.replace_text(demo, "mine", "a batch edit")  # e.g. a find/replace from the shell
        await pilot.press("pageup")
        await pilot.pause()
        assert editor.area.text == original + ", a batch edit"  # what is on disk now
        await pilot.press("ctrl+z")
        assert editor.area.text == original + ", mine"
        await pilot.press("ctrl+z")
        assert editor.area.text == original
