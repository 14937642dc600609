"""Lists and tables pad and cut by display width: wide (日本, ☕) and accented names keep every
column in place and leave no cells of a longer line behind."""

from __future__ import annotations

from PIL import Image
from rich.cells import cell_len

from loradeck.trainer.dataset.project import create_project
from loradeck.tui.cells import fit, fit_right
from loradeck.tui.widgets.image_list import ImageList
from tests.tui.conftest import make_app, wait_screen
from tests.waiting import wait_until_async

NAMES = ["café ☕.png", "日本.jpg", "plain.png", "日本日本日本日本日本日本日本日本日本日本日本.png"]


def test_fit_gives_exactly_the_asked_columns_for_wide_and_accented_text():
    for text in NAMES + ["cafe\u0301.png", ""]:
        for width in range(1, 40):
            assert cell_len(fit(text, width)) == width, (text, width)
            assert cell_len(fit_right(text, width)) == width, (text, width)
    assert fit("日本.jpg", 5) == "日本…"
    assert fit_right("日本.jpg", 10) == "  日本.jpg"


def _line_text(strip) -> str:
    return "".join(segment.text for segment in strip)


async def test_dataset_list_keeps_the_status_column_aligned_with_wide_names(root):
    project = create_project("wide", root, base_model="synthetic:tiny")
    for name in NAMES:
        Image.new("RGB", (16, 16), (200, 10, 10)).save(project.dataset / name)
    (project.dataset / "plain.txt").write_text("a caption")
    app = make_app(root, open_name="wide")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        image_list = screen.query_one(ImageList)
        await wait_until_async(pilot, lambda: len(image_list.entries) == len(NAMES), message="listing")
        await pilot.pause()
        width = image_list.scrollable_content_region.width
        image_list.render_lines(image_list.region.reset_offset)  # fresh component styles
        ends = set()
        for y, entry in enumerate(image_list.entries):
            text = _line_text(image_list.render_line(y))
            assert cell_len(text) == width, (entry.name, text)  # nothing past the edge, nothing left over
            label = "captioned" if entry.name == "plain.png" else "missing"
            assert text.rstrip().endswith(label), (entry.name, text)  # not cut to "missin"
            ends.add(cell_len(text.rstrip()))
        assert len(ends) == 1  # the status column ends in the same cell on every row
        # Filtering to one short name: its row is padded to the full width (no stray cells).
        await pilot.press("slash", *"plain", "enter")
        await wait_until_async(pilot, lambda: len(image_list.entries) == 1, message="filtered")
        assert cell_len(_line_text(image_list.render_line(0))) == width


def test_preview_info_line_measures_wide_names_by_columns():
    from loradeck.tui.widgets.image_preview import fit_info

    # "日本日本.jpg" is 12 columns (8 characters): with its size it needs 19 columns, not 15.
    assert fit_info(["日本日本.jpg", "64×64", "3 KiB"], 18) == "日本日本.jpg"
    assert fit_info(["日本日本.jpg", "64×64", "3 KiB"], 19) == "日本日本.jpg  64×64"
