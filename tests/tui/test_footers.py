"""At 80x24: footers show their keys whole with the palette hint, the keys left out are in F1, the
dataset summary is neither cut nor covered by notifications, the empty projects screen says how to
start, and the caption editor opens at the start of the caption."""

from __future__ import annotations

from textual.widgets import DataTable
from textual.widgets._toast import Toast

from loradeck.tui.widgets.image_list import ImageList
from tests.tui.conftest import make_app, wait_screen
from tests.waiting import wait_until_async


def screen_lines(app) -> list[str]:
    return ["".join(segment.text for segment in strip) for strip in app.screen._compositor.render_strips()]


def footer_line(app) -> str:
    return screen_lines(app)[-1]


async def dataset_ready(pilot):
    screen = await wait_screen(pilot, "DatasetScreen")
    await wait_until_async(pilot, lambda: len(screen.query_one(ImageList).entries) == 12, message="listing")
    await pilot.pause()
    return screen


async def test_dataset_footer_fits_with_back_and_palette_and_the_rest_is_in_help(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await dataset_ready(pilot)
        footer = footer_line(app)
        for key in ("esc Back", "e Edit", "/ Filter", "p Prep", "c Caption", "t Train", "f1 Help", "^p palette"):
            assert key in footer, (key, footer)
        # While a task runs, Cancel takes the room of Prep and Caption, and everything still fits.
        screen.task_name = "caption"
        screen.refresh_bindings()
        footer = await wait_until_async(pilot, lambda: "x Cancel" in (line := footer_line(app)) and line,
                                        message="the footer of a running task")
        assert "x Cancel" in footer and "f1 Help" in footer and "^p palette" in footer, footer
        assert "c Caption" not in footer
        screen.task_name = None
        screen.refresh_bindings()
        await pilot.press("f1")
        help_screen = await wait_screen(pilot, "HelpScreen")
        table = help_screen.query_one("#help-keys", DataTable)
        described = {str(table.get_row_at(i)[1]) for i in range(table.row_count)}
        assert {"Missing", "Import", "Preview mode", "Runs", "Replace", "Check", "Refresh"} <= described


async def test_editor_footer_fits_with_back_and_palette(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await dataset_ready(pilot)
        await pilot.press("enter")
        await wait_screen(pilot, "CaptionEditorScreen")
        await pilot.pause()
        footer = footer_line(app)
        for key in ("esc Back", "pgdn Next", "pgup Prev", "^t Trigger", "^o $EDITOR", "f1 Help", "^p palette"):
            assert key in footer, (key, footer)


async def test_the_editor_opens_at_the_start_of_a_long_caption(root, demo):
    long_caption = "zxq style, " + ", ".join(f"tag number {i}" for i in range(60))
    (demo.dataset / "shape_00.txt").write_text(long_caption)
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await dataset_ready(pilot)
        await pilot.press("enter")
        editor = await wait_screen(pilot, "CaptionEditorScreen")
        await wait_until_async(pilot, lambda: any("zxq style, tag number 0" in line for line in screen_lines(app)),
                               message="the trigger on screen")
        assert editor.area.scroll_offset.y == 0
        assert editor.area.cursor_location == editor.area.document.end  # typing still adds at the end


async def test_dataset_summary_wraps_whole_and_notifications_stay_off_it(root, demo):
    from loradeck.trainer.config import project_settings as settings

    settings.update(demo.settings_file, "project", {"trigger_word": "a rather long trigger phrase, in style"})
    (demo.dataset / "shape_02.caption").write_text("kohya")  # adds "1 ignored ext"
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        screen = await dataset_ready(pilot)
        summary = screen.query_one("#dataset-summary")
        await wait_until_async(pilot, lambda: "trigger:" in str(summary.render()), message="summary")
        await pilot.pause()
        text = " ".join(line.strip() for line in screen_lines(app)[summary.region.y:summary.region.bottom])
        assert "ignored ext" in text and "a rather long trigger phrase, in style" in text, text
        screen.notify("a notification that must not hide the summary", timeout=30)
        await wait_until_async(pilot, lambda: any(t.region.height for t in app.screen.query(Toast)),
                               message="toast shown")
        for toast in app.screen.query(Toast):
            assert not toast.region.overlaps(summary.region)
            assert not toast.region.overlaps(screen.query_one("Footer").region)


async def test_the_empty_projects_screen_says_how_to_create_one(root):
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "ProjectsScreen")
        hint = screen.query_one("#projects-hint")
        await wait_until_async(pilot, lambda: "Press n" in str(hint.render()), message="the empty-root hint")
