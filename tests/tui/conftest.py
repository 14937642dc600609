"""Fixtures for the TUI (part 1) tests: demo-like projects and Pilot helpers."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loradeck.trainer.dataset.demo import create_demo
from loradeck.trainer.dataset.project import Project
from loradeck.tui.app import LoradeckApp
from tests.waiting import wait_until_async


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch):
    # No user keymap or editor settings leak into tests.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("LORADECK_PREVIEW", raising=False)


@pytest.fixture(scope="session")
def _demo_template(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("demo-template")
    create_demo(base)
    return base


@pytest.fixture
def demo(root, _demo_template) -> Project:
    """The demo project (12 drawn images, 8 with captions, prepared at 128 px) and demo-extra/,
    copied from one template made per session."""
    for item in _demo_template.iterdir():
        shutil.copytree(item, root / item.name)
    return Project(root, "demo")


def make_app(root: Path, **kwargs) -> LoradeckApp:
    return LoradeckApp(root, **kwargs)


async def wait_screen(pilot, name: str, timeout: float = 10.0):
    """Wait until the app shows the screen class called `name`, and return it."""
    await wait_until_async(pilot, lambda: type(pilot.app.screen).__name__ == name, timeout,
                           message=f"screen {name}")
    await pilot.pause()
    return pilot.app.screen


def projects_listed(screen, count: int) -> bool:
    """The projects screen shows `count` projects with their counts read (not the name-only rows)."""
    return screen.query_one("#projects").row_count == count and len(screen.summaries) == count
