"""The projects screen never deletes a project under a live run, and lists damaged projects with a
repair or remove action (issue 12, item 1)."""

from __future__ import annotations

from loradeck.trainer.dataset.project import Project, create_project, list_projects
from loradeck.trainer.events import read_all
from loradeck.trainer.runs import lifecycle as runs
from tests.fake_trainer import use_fake_trainer
from tests.runs.conftest import write_images
from tests.tui.conftest import make_app, projects_listed, wait_screen
from tests.waiting import wait_until, wait_until_async


def start_live_run(project, monkeypatch):
    use_fake_trainer(monkeypatch, step_seconds=0.05)
    files = runs.create_run(project, {"max_train_steps": 5000, "resolution": 64})
    pid = runs.start(files)
    wait_until(lambda: any(e["type"] == "step" for e in read_all(files.events)), 20, message="a first step")
    assert runs.run_state(files) == "running"
    return files, pid


async def test_delete_names_the_live_run_offers_to_stop_it_and_deletes_only_after(root, monkeypatch):
    import os
    import signal

    project = create_project("qa cats", root, trigger_word="sks", base_model="synthetic:tiny")
    write_images(project.dataset)
    files, pid = start_live_run(project, monkeypatch)
    try:
        app = make_app(root)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await wait_screen(pilot, "ProjectsScreen")
            await wait_until_async(pilot, lambda: projects_listed(screen, 1))
            await pilot.press("d")
            offer = await wait_screen(pilot, "ConfirmScreen")
            assert files.run_id in offer.question and "cannot be deleted" in offer.question
            assert offer.yes_label == "Stop runs"
            await pilot.press("y")  # stop it first
            await wait_until_async(pilot, lambda: runs.run_state(files) == "stopped", timeout=60, message="run stopped")
            confirm = await wait_screen(pilot, "ConfirmScreen", timeout=30)
            assert "Delete project 'qa cats'" in confirm.question
            assert project.exists()  # nothing deleted before this answer
            await pilot.press("y")
            await wait_until_async(pilot, lambda: not project.path.exists(), message="project deleted")
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


async def test_declining_the_stop_keeps_the_project_and_its_run(root, monkeypatch):
    import os
    import signal

    project = create_project("qa cats", root, base_model="synthetic:tiny")
    write_images(project.dataset)
    files, pid = start_live_run(project, monkeypatch)
    try:
        app = make_app(root)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await wait_screen(pilot, "ProjectsScreen")
            await wait_until_async(pilot, lambda: projects_listed(screen, 1))
            await pilot.press("d")
            await wait_screen(pilot, "ConfirmScreen")
            await pilot.press("n")
            await wait_screen(pilot, "ProjectsScreen")
        assert project.exists() and runs.run_state(files) == "running"
    finally:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


async def test_a_damaged_project_is_listed_and_enter_offers_repair(root):
    (root / "qa cats" / "runs" / "20261130-101010-0001" / "state").mkdir(parents=True)
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "ProjectsScreen")
        await wait_until_async(pilot, lambda: projects_listed(screen, 1), message="damaged project listed")
        assert screen.summaries["qa cats"]["damaged"] is True
        assert "damaged" in str(screen.query_one("#projects").get_row("qa cats")[4])
        await pilot.press("enter")
        dialog = await wait_screen(pilot, "DamagedProjectScreen")
        assert "no project.toml" in str(dialog.query_one("#damaged-question").render())
        await pilot.press("r")
        await wait_until_async(pilot, lambda: Project(root, "qa cats").exists(), message="project.toml written")
        await wait_until_async(pilot, lambda: not screen.summaries.get("qa cats", {}).get("damaged", True),
                               message="listed as a project again")
    assert [p.name for p in list_projects(root)] == ["qa cats"]


async def test_a_damaged_project_can_be_removed_from_its_dialog(root):
    (root / "half" / "originals").mkdir(parents=True)
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "ProjectsScreen")
        await wait_until_async(pilot, lambda: projects_listed(screen, 1))
        await pilot.press("enter")
        await wait_screen(pilot, "DamagedProjectScreen")
        await pilot.press("d")
        await wait_screen(pilot, "ConfirmScreen")
        await pilot.press("y")
        await wait_until_async(pilot, lambda: not (root / "half").exists(), message="damaged folder removed")


async def test_a_root_that_is_a_file_is_said_in_place_not_listed_as_empty(tmp_path):
    not_a_folder = tmp_path / "projects.txt"
    not_a_folder.write_text("x")
    app = make_app(not_a_folder)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "ProjectsScreen")
        hint = screen.query_one("#projects-hint")
        await wait_until_async(pilot, lambda: "not a folder" in str(hint.render()), message="root error shown")
