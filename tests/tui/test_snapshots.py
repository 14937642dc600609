"""What the screens look like at 80×24 (pytest-textual-snapshot; update with --snapshot-update)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loradeck.trainer.dataset.project import create_project
from loradeck.tui.app import LoradeckApp
from tests.tui.conftest import projects_listed
from tests.waiting import wait_until_async

# Paths show on screen, so snapshots use a fixed root.
SNAP_ROOT = Path("/tmp/loradeck-snapshots/projects")


@pytest.fixture
def snap_root(_demo_template, monkeypatch) -> Path:
    shutil.rmtree(SNAP_ROOT, ignore_errors=True)
    SNAP_ROOT.mkdir(parents=True)
    for item in _demo_template.iterdir():
        shutil.copytree(item, SNAP_ROOT / item.name)
    monkeypatch.setenv("LORADECK_ROOT", str(SNAP_ROOT))
    yield SNAP_ROOT
    shutil.rmtree(SNAP_ROOT, ignore_errors=True)


async def settle(pilot, condition=lambda: True):
    await pilot.app.workers.wait_for_complete()
    await wait_until_async(pilot, condition)
    await pilot.pause(0.3)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_projects_screen(snap_compare, snap_root):
    create_project("portraits", snap_root, trigger_word="ohwx", base_model="runwayml/stable-diffusion-v1-5")

    async def ready(pilot):
        await settle(pilot, lambda: projects_listed(pilot.app.screen, 2))

    assert snap_compare(LoradeckApp(snap_root), terminal_size=(80, 24), run_before=ready)


def test_dataset_screen(snap_compare, snap_root):
    async def ready(pilot):
        await settle(pilot, lambda: type(pilot.app.screen).__name__ == "DatasetScreen"
                     and len(pilot.app.screen.query_one("#dataset-list").entries) == 12)
        await pilot.press("down", "down")
        await pilot.pause(0.3)
        await settle(pilot)

    assert snap_compare(LoradeckApp(snap_root, open_name="demo"), terminal_size=(80, 24), run_before=ready)


def test_caption_editor(snap_compare, snap_root):
    async def ready(pilot):
        await settle(pilot, lambda: type(pilot.app.screen).__name__ == "DatasetScreen"
                     and len(pilot.app.screen.query_one("#dataset-list").entries) == 12)
        await pilot.press("enter")
        await settle(pilot, lambda: type(pilot.app.screen).__name__ == "CaptionEditorScreen"
                     and pilot.app.screen.frequencies)

    assert snap_compare(LoradeckApp(snap_root, open_name="demo"), terminal_size=(80, 24), run_before=ready)


def test_import_report_with_refused_files(snap_compare, snap_root):
    create_project("fresh", snap_root)

    async def ready(pilot):
        await settle(pilot, lambda: projects_listed(pilot.app.screen, 2))
        await pilot.press("down", "i")
        await settle(pilot, lambda: type(pilot.app.screen).__name__ == "ImportScreen")
        pilot.app.screen.query_one("#import-path").value = str(snap_root / "demo-extra")
        await pilot.press("enter")
        await settle(pilot, lambda: "imported" in str(pilot.app.screen.query_one("#import-status").render()))

    assert snap_compare(LoradeckApp(snap_root), terminal_size=(80, 24), run_before=ready)
