"""The first thing a new user does: `loradeck demo` from a fresh folder (no --root, no
$LORADECK_ROOT), `t` for the train form, Ctrl+L. The run must train to `completed`, with the
projects root left relative (./projects) where it was chosen."""

from __future__ import annotations

import pytest
from textual.widgets import Static
from tui_runs_helpers import text_of, train_from_the_form

from loradeck.trainer.dataset.demo import DEMO_NAME, create_demo
from loradeck.trainer.dataset.project import ROOT_ENV
from loradeck.trainer.runs import lifecycle as runs
from loradeck.tui.app import LoradeckApp

pytestmark = pytest.mark.slow


async def test_demo_train_form_launch_completes_with_the_default_relative_root(tmp_path, monkeypatch):
    cwd = tmp_path / "fresh clone"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv(ROOT_ENV, raising=False)
    project = create_demo()  # what `loradeck demo` does before it opens the TUI
    assert project.path == cwd.resolve() / "projects" / DEMO_NAME
    app = LoradeckApp(None, open_name=DEMO_NAME)  # `loradeck demo`: root not given
    async with app.run_test(size=(100, 30)) as pilot:
        monitor = await train_from_the_form(pilot, app, steps=2, timeout=300)  # the demo's run, only shorter
        assert monitor.view.state == "completed", (monitor.view.alerts, monitor.view.log_tail[-5:])
        assert monitor.view.step == 2
        assert "completed" in text_of(monitor.query_one("#finished", Static))
    [files] = runs.run_folders(project)
    assert files.dir.parent == cwd.resolve() / "projects" / DEMO_NAME / "runs"
    assert runs.run_info(files).output and files.output("lora").is_file()
