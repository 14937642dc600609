"""Caption editor: autosave, undo/redo, next/prev, outside changes never overwritten, tag
completion, trigger insert, find/replace preview then apply, $EDITOR."""

from __future__ import annotations

import os
import sys

from textual.widgets import DataTable, Input

from loradeck.trainer.dataset.caption_store import read_caption
from loradeck.tui.screens.caption_editor import AUTOSAVE_DELAY, current_fragment, edit_externally, suggest_tags
from tests.tui.conftest import make_app, wait_screen
from tests.waiting import wait_until_async


async def open_editor(pilot, index: int = 0):
    screen = await wait_screen(pilot, "DatasetScreen")
    await wait_until_async(pilot, lambda: len(screen.query_one("#dataset-list").entries) == 12)
    for _ in range(index):
        await pilot.press("down")
    await pilot.press("enter")
    return await wait_screen(pilot, "CaptionEditorScreen")


def caption(demo, name: str) -> str | None:
    return read_caption(demo.dataset / name)


async def test_edit_autosaves_undo_redo_and_next_prev(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        editor = await open_editor(pilot, 2)  # shape_02.png has no caption
        assert editor.entry.name == "shape_02.png" and editor.area.text == ""
        await pilot.press(*"a blue ring")
        await wait_until_async(pilot, lambda: caption(demo, "shape_02.png") == "a blue ring", timeout=5,
                               message="autosave")
        assert str(editor.query_one("#editor-state").render()) == "saved ✓"
        await pilot.press("pagedown")
        await pilot.pause()
        assert editor.entry.name == "shape_03.jpg"
        original = caption(demo, "shape_03.jpg")
        assert editor.area.text == original
        await pilot.press("end", *", more")
        await wait_until_async(pilot, lambda: caption(demo, "shape_03.jpg") == original + ", more", timeout=5,
                               message="autosave of an edit")
        await pilot.press("ctrl+z")
        await wait_until_async(pilot, lambda: caption(demo, "shape_03.jpg") == original, timeout=5,
                               message="autosave after undo")
        assert editor.area.text == original
        await pilot.press("ctrl+y")
        await wait_until_async(pilot, lambda: caption(demo, "shape_03.jpg") == original + ", more", timeout=5,
                               message="autosave after redo")
        await pilot.press(*" extra")  # typed, then left at once: saved on the way out
        await pilot.press("pageup")
        await pilot.pause()
        assert editor.entry.name == "shape_02.png" and editor.area.text == "a blue ring"
        assert caption(demo, "shape_03.jpg") == original + ", more extra"
        await pilot.press("escape")
        dataset = await wait_screen(pilot, "DatasetScreen")
        await wait_until_async(pilot, lambda: dataset.query_one("#dataset-list").current is not None
                               and dataset.query_one("#dataset-list").current.name == "shape_02.png")


async def test_outside_change_reloads_when_there_is_nothing_unsaved(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        editor = await open_editor(pilot, 0)
        (demo.dataset / "shape_00.txt").write_text("changed by another tool\n")
        await wait_until_async(pilot, lambda: editor.area.text == "changed by another tool", timeout=5,
                               message="watchdog reload")
        assert type(app.screen).__name__ == "CaptionEditorScreen"


async def test_outside_change_with_unsaved_edits_asks_and_never_overwrites(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        editor = await open_editor(pilot, 0)
        original = editor.area.text
        await pilot.press("end", *", mine")
        (demo.dataset / "shape_00.txt").write_text("theirs\n")
        editor.check_disk()  # what the watchdog handler calls; it may also have fired already
        conflict = await wait_screen(pilot, "ConflictScreen")
        assert "theirs" in str(conflict.query_one("#conflict-disk").render())
        await pilot.pause(AUTOSAVE_DELAY + 0.3)
        assert caption(demo, "shape_00.png") == "theirs"  # autosave did not clobber it
        await pilot.press("r")
        await wait_screen(pilot, "CaptionEditorScreen")
        assert editor.area.text == "theirs"
        await pilot.press("ctrl+z")  # the reload is one undoable edit: ours comes back
        assert editor.area.text == original + ", mine"
        # Now keep ours on purpose.
        (demo.dataset / "shape_00.txt").write_text("theirs again\n")
        editor.check_disk()
        await wait_screen(pilot, "ConflictScreen")
        await pilot.press("k")
        await wait_screen(pilot, "CaptionEditorScreen")
        await wait_until_async(pilot, lambda: caption(demo, "shape_00.png") == original + ", mine", timeout=5)


async def test_autosave_refuses_when_the_file_changed_unnoticed(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        editor = await open_editor(pilot, 1)
        if editor._observer is not None:
            editor._observer.stop()  # simulate a change the watcher missed (e.g. a network file system)
            editor._observer.join(2)
        await pilot.press("end", *" more")
        (demo.dataset / "shape_01.txt").write_text("newer on disk\n")
        await wait_screen(pilot, "ConflictScreen", timeout=5)
        assert caption(demo, "shape_01.png") == "newer on disk"
        await pilot.press("escape")  # decide later: still nothing written
        await pilot.pause(AUTOSAVE_DELAY + 0.2)
        assert caption(demo, "shape_01.png") == "newer on disk"


def test_tag_completion_helpers():
    assert current_fragment("zxq style, red ci", 17) == "red ci"
    assert current_fragment("red", 3) == "red"
    freq = [("red circle", 5), ("red square", 2), ("ring", 1)]
    assert suggest_tags("red", freq, set()) == [("red circle", 5), ("red square", 2)]
    assert suggest_tags("red", freq, {"red circle"}) == [("red square", 2)]
    assert suggest_tags("", freq, set()) == []


async def test_tab_completes_a_tag_and_trigger_is_inserted_once(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        editor = await open_editor(pilot, 5)  # shape_05.png: no caption
        await wait_until_async(pilot, lambda: editor.frequencies, message="tag frequencies")
        tag = next(t for t, _ in editor.frequencies if t != "zxq style")
        await pilot.press(*tag[:4])
        await wait_until_async(pilot, lambda: editor.suggestions, message="suggestion")
        assert "Tab →" in str(editor.query_one("#editor-suggest").render())
        await pilot.press("tab")
        assert editor.area.text.startswith(tag[:4]) and editor.area.text in {t for t, _ in editor.frequencies}
        await pilot.press("ctrl+t", "ctrl+t")
        assert editor.area.text.startswith("zxq style, ")
        assert editor.area.text.count("zxq style") == 1
        tags = editor.query_one("#editor-tags", DataTable)
        assert tags.row_count == len(editor.frequencies)


async def test_find_replace_previews_every_change_before_applying(root, demo):
    before = {p.name: p.read_text() for p in demo.dataset.glob("*.txt")}
    expected = sorted(n for n, t in before.items() if "gradient" in t)
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "DatasetScreen")
        await pilot.press("f")
        dialog = await wait_screen(pilot, "FindReplaceScreen")
        await pilot.press(*"gradient")
        dialog.query_one("#replace-with", Input).value = "blend"
        await pilot.press("enter")
        table = dialog.query_one("#replace-preview", DataTable)
        await wait_until_async(pilot, lambda: table.row_count == len(expected), message="preview rows")
        assert sorted(str(table.get_row_at(i)[0]).rsplit(".", 1)[0] for i in range(table.row_count)) == \
            [n.rsplit(".", 1)[0] for n in expected]
        cell = table.get_row_at(0)[1]
        minus, plus = str(cell).split("\n")
        assert minus.startswith("- ") and "gradient" in minus and plus.startswith("+ ") and "blend" in plus
        assert len(minus) < 50  # starts near the change, so the change is on screen at 80 columns
        assert any("reverse" in str(span.style) and str(cell)[span.start:span.end] == "blend"
                   for span in cell.spans)
        assert {p.name: p.read_text() for p in demo.dataset.glob("*.txt")} == before  # preview wrote nothing
        # Changing the inputs invalidates the preview: Apply is refused until a new preview.
        dialog.query_one("#replace-with", Input).value = "fade"
        await pilot.press("ctrl+a")
        await pilot.pause()
        assert {p.name: p.read_text() for p in demo.dataset.glob("*.txt")} == before
        dialog.query_one("#replace-with", Input).focus()
        await pilot.press("enter")  # preview again, from the field; ctrl+a must work from there too
        await wait_until_async(pilot, lambda: not dialog.query_one("#replace-apply").disabled, message="new preview")
        assert isinstance(app.focused, Input)
        await pilot.press("ctrl+a")
        await wait_until_async(pilot, lambda: dialog.changed == len(expected), message="applied")
        await pilot.press("escape")
        await wait_screen(pilot, "DatasetScreen")
    after = {p.name: p.read_text() for p in demo.dataset.glob("*.txt")}
    assert all("fade" in after[n] and "gradient" not in after[n] for n in expected)


def test_external_editor_edits_the_caption_file(tmp_path, monkeypatch):
    script = tmp_path / "fake-editor.py"
    script.write_text("import sys\nopen(sys.argv[1], 'w').write('written in the editor\\n')\n")
    monkeypatch.setenv("VISUAL", f"{sys.executable} {script}")
    target = tmp_path / "a.txt"
    assert edit_externally(target) == 0
    assert target.read_text() == "written in the editor\n"
    monkeypatch.setenv("VISUAL", f"{sys.executable} -c 'import sys; sys.exit(3)'")
    assert edit_externally(target) == 3
    assert os.path.exists(target)


async def test_autosave_never_removes_a_caption_file_on_its_own(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        editor = await open_editor(pilot, 0)
        editor.area.select_all()
        await pilot.press("backspace")
        await pilot.pause(AUTOSAVE_DELAY + 0.4)
        assert (demo.dataset / "shape_00.txt").exists()
        assert "Ctrl+S" in str(editor.query_one("#editor-state").render())
        await pilot.press("ctrl+s")  # explicit: blank removes it, as the caption store defines
        assert not (demo.dataset / "shape_00.txt").exists()


async def test_a_truncate_then_write_outside_is_read_once_complete(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        editor = await open_editor(pilot, 0)
        path = demo.dataset / "shape_00.txt"
        with open(path, "w") as fh:  # what `echo text > file` does: truncate, then write
            fh.flush()
            editor.schedule_disk_check()
            await pilot.pause(0.05)
            fh.write("written in two steps\n")
        await wait_until_async(pilot, lambda: editor.area.text == "written in two steps", timeout=5)
        assert type(app.screen).__name__ == "CaptionEditorScreen"


async def test_the_editor_preview_info_line_is_not_cut_at_80_columns(root, demo):
    from loradeck.tui.widgets.image_preview import ImagePreview

    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        editor = await open_editor(pilot, 2)
        preview = editor.query_one(ImagePreview)
        await wait_until_async(pilot, lambda: preview.info.startswith("shape_02.png"), message="the preview info")
        await pilot.pause()
        line = preview.query_one("#preview-info")
        assert len(preview.info) <= line.content_size.width
        assert "96×160" in preview.info and "KiB" in preview.info  # the mode is what gives way


async def test_the_file_watcher_never_waits_for_the_ui(root, demo):
    """watchdog calls in on its own thread while holding the observer's lock; if it waited for the UI,
    leaving the editor (observer.stop() takes that lock) would deadlock the app. Here the UI is busy
    (this test holds the event loop) while the watcher reports a change: it must return at once."""
    import threading
    from types import SimpleNamespace

    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        editor = await open_editor(pilot, 0)
        event = SimpleNamespace(src_path=str(demo.dataset / "shape_00.txt"), dest_path="")
        watcher = threading.Thread(target=editor.watched_event, args=(event,), daemon=True)
        watcher.start()
        watcher.join(timeout=3)  # blocks the event loop, as a busy UI would
        assert not watcher.is_alive(), "the watcher thread is waiting for the UI"
        (demo.dataset / "shape_00.txt").write_text("changed while the UI was busy\n")
        await wait_until_async(pilot, lambda: editor.area.text == "changed while the UI was busy", timeout=5,
                               message="reload once the UI is free again")
        await pilot.press("escape")
        await wait_screen(pilot, "DatasetScreen")
