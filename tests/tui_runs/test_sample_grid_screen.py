"""The samples grid: steps × prompts, keyboard navigation, two steps side by side, export of the
selected step's LoRA, the contact sheet; reached from the runs screen and the monitor, whose sample
panel also steps back through earlier samples with [ and ]."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable
from tui_runs_helpers import ScreenApp, text_of

from loradeck.tui.screens.export_dialog import ExportScreen
from loradeck.tui.screens.monitor import MonitorScreen
from loradeck.tui.screens.runs import RunsScreen
from loradeck.tui.screens.sample_grid import SampleGridScreen
from loradeck.tui.widgets.image_preview import ImagePreview
from tests.runs.sampled_run import RUN_ID, make_sampled_run, path_of
from tests.waiting import wait_until_async


@pytest.fixture
def sampled(project):
    return make_sampled_run(project)


def previews(screen) -> tuple:
    return screen.query_one("#grid-a", ImagePreview).path, screen.query_one("#grid-b", ImagePreview).path


async def test_grid_walks_steps_and_prompts_and_compares_two_steps(project, sampled):
    app = ScreenApp(lambda: SampleGridScreen(project, RUN_ID))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        table = screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 3, message="three steps")
        assert len(table.columns) == 4  # step, LoRA, two prompts
        assert screen.selected() == (6, 0) and previews(screen)[0] == path_of(sampled, 6, 0)
        await pilot.press("c")                       # pin step 6
        await pilot.press("up", "up")                # step 2
        assert screen.selected() == (2, 0)
        assert previews(screen) == (path_of(sampled, 2, 0), path_of(sampled, 6, 0))
        await pilot.press("right")                   # the second prompt, on both sides
        assert previews(screen) == (path_of(sampled, 2, 1), path_of(sampled, 6, 1))
        assert "sks, a blue coat" in text_of(screen.query_one("#grid-prompt"))
        assert "step 6" in text_of(screen.query_one("#grid-b-label"))
        await pilot.press("down", "c")               # pin step 4 instead
        await pilot.press("down")
        assert previews(screen) == (path_of(sampled, 6, 1), path_of(sampled, 4, 1))


@pytest.mark.slow  # the export's diffusers load check runs in a subprocess
async def test_export_from_a_selected_step_publishes_that_checkpoint(project, tmp_path):
    from tests.publish.tiny_models import write_lora

    files = make_sampled_run(project, lora=lambda path: write_lora(path, output_name="lora", trigger="sks"))
    (tmp_path / "loras").mkdir()
    app = ScreenApp(lambda: SampleGridScreen(project, RUN_ID))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 3, message="three steps")
        await pilot.press("up")                      # step 4: a checkpoint
        await pilot.press("e")
        assert isinstance(app.screen, ExportScreen)
        assert app.screen.query_one("#export-checkpoint").value == "4"
        app.screen.query_one("#export-dest").value = str(tmp_path / "loras")
        app.screen.query_one("#export-checkpoint").focus()  # Enter exports from the last field, after the name
        await pilot.press("enter")
        published = tmp_path / "loras" / "lora-step4.safetensors"
        from loradeck.tui.screens.error import ErrorScreen

        # The adapter claims its name first, then the sidecar moves in: wait for both.
        await wait_until_async(pilot,
                               lambda: published.with_suffix(".json").exists() or isinstance(app.screen, ErrorScreen),
                               timeout=300,
                               message="the step's checkpoint published")
        assert not isinstance(app.screen, ErrorScreen), app.screen.message
        assert published.exists()
    assert files.checkpoint("lora", 4).exists()


async def test_a_step_whose_lora_was_not_kept_says_so_instead_of_exporting(project, sampled):
    sampled.checkpoint("lora", 2).unlink()
    app = ScreenApp(lambda: SampleGridScreen(project, RUN_ID))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 3, message="three steps")
        notes = []
        app.notify = lambda message, **kw: notes.append(message)
        await pilot.press("up", "up", "e")
        assert isinstance(app.screen, SampleGridScreen)
        assert notes == ["no LoRA of step 2 was kept; steps with one: 4, 6"]


async def test_s_writes_the_contact_sheet_into_the_run_folder(project, sampled):
    app = ScreenApp(lambda: SampleGridScreen(project, RUN_ID))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 3, message="three steps")
        await pilot.press("s")
        await wait_until_async(pilot, (sampled.dir / "contact_sheet.png").exists, message="the contact sheet")


async def test_runs_screen_opens_the_grid_of_the_selected_run(project, sampled):
    app = ScreenApp(lambda: RunsScreen(project))
    async with app.run_test(size=(80, 24)) as pilot:
        table = app.screen.query_one(DataTable)
        await wait_until_async(pilot, lambda: table.row_count == 1, message="the run")
        await pilot.press("g")
        await wait_until_async(pilot, lambda: isinstance(app.screen, SampleGridScreen), message="the grid")
        assert app.screen.run_id == RUN_ID


async def test_monitor_steps_back_through_earlier_samples_and_opens_the_grid(project, sampled):
    app = ScreenApp(lambda: MonitorScreen(project, RUN_ID, poll_interval=0.05))
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = app.screen
        sample = monitor.query_one("#sample", ImagePreview)
        await wait_until_async(pilot, lambda: sample.path == path_of(sampled, 6, 1), message="the newest sample")
        await pilot.press("left_square_bracket")
        await wait_until_async(pilot, lambda: sample.path == path_of(sampled, 6, 0), message="one sample back")
        await pilot.press("left_square_bracket", "left_square_bracket")
        await wait_until_async(pilot, lambda: sample.path == path_of(sampled, 4, 0), message="three samples back")
        assert "sample 3/6 @ step 4" in text_of(monitor.query_one("#sample-caption"))
        await pilot.press("right_square_bracket")
        await wait_until_async(pilot, lambda: sample.path == path_of(sampled, 4, 1), message="one forward")
        await pilot.press("g")
        await wait_until_async(pilot, lambda: isinstance(app.screen, SampleGridScreen), message="the grid")
        assert app.screen.run_id == RUN_ID


def test_the_new_modules_keep_the_layer_rules():
    """The grid screen brings no torch into the TUI; the engine modules it and others call bring no textual."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys\n"
            "import loradeck.trainer.runs.sample_grid, loradeck.trainer.train.sample_prompts, loradeck.trainer.dataset.caption_journal, loradeck.trainer.cli.cmd_samples\n"
            "assert 'textual' not in sys.modules, 'textual in the engine'\n"
            "import loradeck.tui.screens.sample_grid\n"
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'peft', 'accelerate') if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2], check=True)
    assert out.stdout.strip() == ""
