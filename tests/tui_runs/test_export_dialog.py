"""The export dialog: Enter walks the fields before exporting, a taken name is resolved in the
dialog (another name, or a new version), the folder is remembered, and hints name its fields."""

from __future__ import annotations

import pytest
from textual.widgets import DataTable, Input, Select
from tui_runs_helpers import T0, ScreenApp, make_run, run_started, step_events, text_of

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.lora.publish import PublishError, export_run
from loradeck.tui.screens.export_dialog import DIALOG_WORDING, ExportScreen
from loradeck.tui.screens.runs import RunsScreen
from tests.publish.tiny_models import write_lora
from tests.waiting import wait_until_async

RUN = "20260102-000000-bbbb"


@pytest.fixture
def stopped_run(project):
    """A stopped run with one checkpoint (a real kohya LoRA file) to export."""
    make_run(project, RUN, [run_started("b", t=T0)] + step_events(1, 4, 10, t0=T0)
             + [{"type": "run_finished", "time": T0 + 10, "status": "stopped"}], state="stopped")
    # A base model not on this machine: the export skips its diffusers load check (and says so), as
    # it would for a user; the check itself (a torch subprocess) is covered in test_runs_screen.
    (project.runs / RUN / "config.toml").write_text(f'base_model = "{project.root}/no-such-base"\n')
    (project.runs / RUN / "checkpoints").mkdir()
    write_lora(project.runs / RUN / "checkpoints" / "lora-step00000004.safetensors", output_name="lora",
               trigger="sks")
    return project


async def open_dialog(pilot, app) -> ExportScreen:
    table = app.screen.query_one(DataTable)
    await wait_until_async(pilot, lambda: table.row_count == 1, message="the run listed")
    await pilot.press("e")
    await wait_until_async(pilot, lambda: isinstance(app.screen, ExportScreen), message="the export dialog")
    await pilot.pause()
    return app.screen


async def test_enter_in_the_folder_field_moves_to_the_name_instead_of_exporting(stopped_run, tmp_path):
    (tmp_path / "loras").mkdir()
    app = ScreenApp(lambda: RunsScreen(stopped_run))
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot, app)
        dialog.query_one("#export-dest", Input).value = str(tmp_path / "loras")
        await pilot.press("enter")
        await pilot.pause()
        assert app.screen is dialog and app.focused is dialog.query_one("#export-name")
        assert app.focused.value == "cats-step4"  # the name is there to be seen and changed
        await pilot.press("enter")
        assert app.focused is dialog.query_one("#export-checkpoint")
    assert not list((tmp_path / "loras").iterdir())  # nothing exported by those Enters


async def test_a_taken_name_is_resolved_in_the_dialog_and_the_folder_is_remembered(stopped_run, tmp_path):
    loras = tmp_path / "loras"
    loras.mkdir()
    app = ScreenApp(lambda: RunsScreen(stopped_run))
    async with app.run_test(size=(80, 24)) as pilot:
        dialog = await open_dialog(pilot, app)
        dialog.query_one("#export-dest", Input).value = str(loras)
        await pilot.press("enter", "enter", "enter")
        await wait_until_async(pilot, (loras / "cats-step4.safetensors").exists, timeout=30, message="first export")
        await wait_until_async(pilot, lambda: settings.load(stopped_run.settings_file).export.dest == str(loras),
                               message="the folder saved in project.toml")
        # Again: the folder is filled in, and the same name is refused in the dialog, naming its fields.
        dialog = await open_dialog(pilot, app)
        assert dialog.query_one("#export-dest", Input).value == str(loras)
        await pilot.press("enter", "enter", "enter")
        await pilot.pause()
        assert app.screen is dialog
        problem = text_of(dialog.query_one("#export-problem"))
        assert "already exists" in problem and "Name" in problem and "--" not in problem
        dialog.query_one("#export-conflict", Select).value = "version"
        dialog.query_one("#export-checkpoint", Input).focus()
        await pilot.press("enter")
        await wait_until_async(pilot, (loras / "cats-step4-v2.safetensors").exists,
                               timeout=30, message="versioned export")
        # Or another name.
        dialog = await open_dialog(pilot, app)
        dialog.query_one("#export-name", Input).value = "cats-final"
        dialog.query_one("#export-checkpoint", Input).focus()
        await pilot.press("enter")
        await wait_until_async(pilot, (loras / "cats-final.safetensors").exists, timeout=30, message="renamed export")


def test_engine_refusal_hints_name_the_dialog_fields_not_cli_flags(stopped_run, tmp_path):
    loras = tmp_path / "loras"
    loras.mkdir()
    (loras / "cats-step4.safetensors").write_bytes(b"taken")
    with pytest.raises(PublishError) as refused:
        export_run(stopped_run.name, RUN, root=stopped_run.root, to=str(loras), checkpoint="latest",
                   load_check=False, wording=DIALOG_WORDING)
    assert "--" not in refused.value.hint and "Name" in refused.value.hint
    with pytest.raises(PublishError) as cli:  # the CLI keeps its flags
        export_run(stopped_run.name, RUN, root=stopped_run.root, to=str(loras), checkpoint="latest",
                   load_check=False)
    assert "--name" in cli.value.hint
