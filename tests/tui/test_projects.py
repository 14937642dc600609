"""Projects screen: listing with counts and last run, create, import (refused files shown), delete."""

from __future__ import annotations

import json

from textual.widgets import DataTable, Input

from loradeck.trainer.dataset.project import Project, create_project, list_projects
from loradeck.trainer.events import dumps
from loradeck.trainer.runs.files import RunFiles
from loradeck.tui.screens.import_files import complete_path
from tests.tui.conftest import make_app, projects_listed, wait_screen
from tests.waiting import wait_until_async


def make_run(project, run_id: str, events: list[dict], status: dict) -> None:
    files = RunFiles(project.runs / run_id)
    files.dir.mkdir(parents=True)
    files.config.write_text("")
    files.events.write_text("".join(dumps(e) + "\n" for e in events))
    files.status.write_text(json.dumps(status))


async def test_projects_list_shows_counts_and_last_run_status(root, demo):
    make_run(demo, "20260101-110000", [{"type": "run_finished", "time": 1.0, "status": "failed"}],
             {"pid": 999_999_999, "state": "failed", "heartbeat": 0})
    make_run(demo, "20260101-120000", [{"type": "run_finished", "time": 2.0, "status": "completed"}],
             {"pid": 999_999_999, "state": "completed", "heartbeat": 0})
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "ProjectsScreen")
        table = screen.query_one("#projects", DataTable)
        await wait_until_async(pilot, lambda: projects_listed(app.screen, 1), message="projects listed")
        row = [str(c) for c in table.get_row("demo")]
        assert row[:4] == ["demo", "12", "8/12", "completed"]  # the newest run's state


async def test_run_whose_process_died_reads_as_crashed(root, demo):
    make_run(demo, "20260101-130000", [{"type": "step", "time": 1.0, "step": 1, "total_steps": 9,
                                        "epoch": 1, "loss": 0.1, "lr": 1e-4}],
             {"pid": 999_999_999, "state": "running", "heartbeat": 0})
    from loradeck.trainer.runs.project_summary import summarize

    assert summarize(demo).last_run_status == "crashed"


async def test_create_project_from_the_form_and_select_it(root, demo):
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ProjectsScreen")
        await wait_until_async(pilot, lambda: projects_listed(app.screen, 1))
        await pilot.press("n")
        await wait_screen(pilot, "NewProjectScreen")
        await pilot.press(*"cats", "enter", *"zxq", "enter")
        base = app.screen.query_one("#new-base", Input)
        base.value = "synthetic:tiny"
        await pilot.press("enter")
        screen = await wait_screen(pilot, "ProjectsScreen")
        table = screen.query_one("#projects", DataTable)
        await wait_until_async(pilot, lambda: projects_listed(screen, 2), message="new project listed")
        await pilot.pause(0.3)
        await app.workers.wait_for_complete()
        # The new project is the selected one (it sorts before "demo"): a following `d` must
        # offer to delete it, not the project that was selected before.
        assert screen.selected_name() == "cats"
        await pilot.press("d")
        confirm = await wait_screen(pilot, "ConfirmScreen")
        assert "'cats'" in confirm.question
        await pilot.press("n")
    assert [p.name for p in list_projects(root)] == ["cats", "demo"]
    assert 'trigger_word = "zxq"' in (root / "cats" / "project.toml").read_text()


async def test_create_refuses_a_bad_name_inline(root):
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ProjectsScreen")
        await pilot.press("n")
        screen = await wait_screen(pilot, "NewProjectScreen")
        screen.query_one("#new-name", Input).value = "../escape"
        await pilot.click("#create")
        await pilot.pause()
        assert type(app.screen).__name__ == "NewProjectScreen"
        assert "not" in str(screen.query_one("#new-error").render())
    assert list_projects(root) == []


async def test_import_folder_lists_refused_files_with_reasons(root, demo):
    create_project("fresh", root)
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "ProjectsScreen")
        table = screen.query_one("#projects", DataTable)
        await wait_until_async(pilot, lambda: projects_listed(screen, 2), message="projects listed")
        table.move_cursor(row=1)  # "fresh"
        await pilot.press("i")
        dialog = await wait_screen(pilot, "ImportScreen")
        dialog.query_one("#import-path", Input).value = str(root / "demo-extra")
        await pilot.press("enter")
        refused = dialog.query_one("#import-refused", DataTable)
        await wait_until_async(pilot, lambda: "imported" in str(dialog.query_one("#import-status").render()),
                               message="import report")
        status = str(dialog.query_one("#import-status").render())
        assert "imported 4" in status and "refused 2" in status
        rows = {str(refused.get_row_at(i)[0]): str(refused.get_row_at(i)[1]) for i in range(refused.row_count)}
        assert set(rows) == {"broken_download.png", "notes.md"}
        assert all(reason for reason in rows.values())
        await pilot.press("escape")
        await wait_screen(pilot, "ProjectsScreen")
    assert len(list((root / "fresh" / "originals").iterdir())) == 4


async def test_path_input_completes_folders(root, demo):
    assert complete_path(str(root / "demo-ex")) == str(root / "demo-extra") + "/"
    assert complete_path(str(root / "demo-extra" / "broken")) == str(root / "demo-extra" / "broken_download.png")
    assert complete_path(str(root / "nothing-here")) is None
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ProjectsScreen")
        await wait_until_async(pilot, lambda: projects_listed(app.screen, 1))
        await pilot.press("i")
        dialog = await wait_screen(pilot, "ImportScreen")
        field = dialog.query_one("#import-path", Input)
        field.value = str(root / "demo-ex")
        await pilot.press("tab")
        assert field.value == str(root / "demo-extra") + "/"


async def test_delete_only_after_confirmation(root, demo):
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "ProjectsScreen")
        table = screen.query_one("#projects", DataTable)
        await wait_until_async(pilot, lambda: projects_listed(screen, 1))
        await pilot.press("d")
        await wait_screen(pilot, "ConfirmScreen")
        await pilot.press("escape")  # the default answer: keep it
        await wait_screen(pilot, "ProjectsScreen")
        assert demo.exists()
        await pilot.press("d")
        await wait_screen(pilot, "ConfirmScreen")
        await pilot.press("enter")  # focus starts on "No": Enter alone never deletes
        await wait_screen(pilot, "ProjectsScreen")
        assert demo.exists()
        await pilot.press("d")
        await wait_screen(pilot, "ConfirmScreen")
        await pilot.press("y")
        await wait_until_async(pilot, lambda: not demo.path.exists(), message="project deleted")
        await wait_until_async(pilot, lambda: projects_listed(screen, 0), message="list refreshed")
    assert list_projects(root) == []
    assert Project(root, "demo").exists() is False


async def test_projects_are_read_once_at_start(root, demo, monkeypatch):
    # Reading summaries scans every dataset; doing it twice at start competed with the first paint.
    from loradeck.trainer.runs import project_summary

    calls = []
    real = project_summary.summarize
    monkeypatch.setattr(project_summary, "summarize", lambda p: calls.append(p.name) or real(p))
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ProjectsScreen")
        await wait_until_async(pilot, lambda: projects_listed(app.screen, 1), message="projects listed")
        await pilot.pause(0.3)
        assert calls == ["demo"]


async def test_import_dialog_shows_its_help_and_every_refusal_reason_in_full_at_80x24(root, demo):
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "ProjectsScreen")
        await wait_until_async(pilot, lambda: projects_listed(screen, 1), message="projects listed")
        await pilot.press("i")
        dialog = await wait_screen(pilot, "ImportScreen")
        dialog.query_one("#import-path", Input).value = str(root / "demo-extra")
        await pilot.press("enter")
        await wait_until_async(pilot, lambda: "imported" in str(dialog.query_one("#import-status").render()),
                               message="import report")
        await pilot.pause()
        screen_text = " ".join(" ".join("".join(seg.text for seg in strip).replace("│", " ").split())
                               for strip in dialog._compositor.render_strips())
        assert ".txt/.caption sidecars)" in screen_text
        refused = dialog.query_one("#import-refused", DataTable)
        for i in range(refused.row_count):
            reason = str(refused.get_row_at(i)[1])
            assert " ".join(reason.split()) in screen_text, reason


async def test_import_dialog_takes_a_kohya_dataset_toml_with_captions_and_repeats(root, demo, tmp_path):
    from PIL import Image

    from loradeck.trainer.dataset.caption_store import read_caption
    from loradeck.trainer.dataset.repeat_folders import image_repeats

    images = tmp_path / "kohya-images"
    images.mkdir()
    for i, colour in enumerate(("red", "blue")):
        Image.new("RGB", (32, 32), colour).save(images / f"k{i}.png")
    (images / "k0.txt").write_text("zxq, red square")
    toml = tmp_path / "dataset.toml"
    toml.write_text(f"[[datasets]]\n[[datasets.subsets]]\nimage_dir = '{images}'\nnum_repeats = 4\n"
                    "caption_extension = '.txt'\nclass_tokens = 'zxq'\n")
    fresh = create_project("fresh", root)
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "ProjectsScreen")
        await wait_until_async(pilot, lambda: projects_listed(screen, 2), message="projects listed")
        screen.query_one("#projects", DataTable).move_cursor(row=1)  # "fresh"
        await pilot.press("i")
        dialog = await wait_screen(pilot, "ImportScreen")
        dialog.query_one("#import-path", Input).value = str(toml)
        await pilot.press("enter")
        await wait_until_async(pilot, lambda: "imported" in str(dialog.query_one("#import-status").render()),
                               message="import report")
        assert "imported 2" in str(dialog.query_one("#import-status").render())
    assert read_caption(fresh.dataset / "k0.png") == "zxq, red square"
    assert read_caption(fresh.dataset / "k1.png") == "zxq"  # class_tokens where no caption file
    assert image_repeats(fresh) == {"k0": 4, "k1": 4}
