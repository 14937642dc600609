"""App shell: keymap remapping, help, command palette, the one error modal, animations off, and
no torch in the TUI process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from loradeck.trainer.errors import LoradeckError
from loradeck.tui.commands import ScreenActions
from loradeck.tui.keys import DEFAULTS, keymap_path, load_keymap
from loradeck.tui.widgets.image_list import ImageList
from loradeck.tui.widgets.image_preview import detect_mode
from tests.tui.conftest import make_app, projects_listed, wait_screen
from tests.waiting import wait_until_async

REPO = Path(__file__).resolve().parents[2]


def test_keymap_file_is_read_and_bad_entries_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert keymap_path() == tmp_path / "loradeck" / "keys.toml"
    assert load_keymap() == ({}, [])
    keymap_path().parent.mkdir(parents=True)
    keymap_path().write_text('[keys]\n"dataset.missing" = "z"\n"no.such" = "q"\n"editor.next" = ""\n')
    keymap, problems = load_keymap()
    assert keymap == {"dataset.missing": "z"}
    assert len(problems) == 2 and "no.such" in problems[0]
    keymap_path().write_text("[keys\n")
    assert load_keymap()[0] == {} and "not read" in load_keymap()[1][0]


def test_every_binding_id_is_unique_and_documented():
    doc = (REPO / "docs" / "tui.md").read_text()
    for binding_id in DEFAULTS:
        assert f"`{binding_id}`" in doc, f"{binding_id} is missing from docs/tui.md"


async def test_remapped_key_runs_the_action_and_the_old_one_does_not(root, demo, tmp_path):
    keys = tmp_path / "keys.toml"
    keys.write_text('[keys]\n"dataset.missing" = "z"\n')
    app = make_app(root, open_name="demo", keymap_file=keys)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        image_list = screen.query_one(ImageList)
        await wait_until_async(pilot, lambda: len(image_list.entries) == 12)
        await pilot.press("m")
        await pilot.pause(0.2)
        assert len(image_list.entries) == 12 and not screen.missing_only
        await pilot.press("z")
        await wait_until_async(pilot, lambda: len(image_list.entries) == 4, message="remapped key works")
        await pilot.press("f1")
        help_screen = await wait_screen(pilot, "HelpScreen")
        table = help_screen.query_one("#help-keys")
        rows = {str(table.get_row_at(i)[2]): str(table.get_row_at(i)[0]) for i in range(table.row_count)}
        assert rows["dataset.missing"] == "z"


async def test_help_lists_the_screen_keys_with_their_ids(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "DatasetScreen")
        await pilot.press("f1")
        help_screen = await wait_screen(pilot, "HelpScreen")
        table = help_screen.query_one("#help-keys")
        ids = {str(table.get_row_at(i)[2]) for i in range(table.row_count)}
        assert {"dataset.prep", "dataset.caption", "dataset.cancel", "app.quit"} <= ids
        await pilot.press("escape")
        await wait_screen(pilot, "DatasetScreen")


async def test_command_palette_offers_the_current_screens_actions(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        await wait_until_async(pilot, lambda: len(screen.query_one(ImageList).entries) == 12)
        provider = ScreenActions(screen)
        names = [hit.text async for hit in provider.search("missing")]
        assert names == ["Missing"]
        found = [hit async for hit in provider.discover()]
        assert {"Prep", "Caption", "Check", "Replace"} <= {hit.text for hit in found}
        missing_hit = [hit async for hit in provider.search("missing")][0]
        app.call_later(missing_hit.command)  # as the palette runs a chosen hit
        await wait_until_async(pilot, lambda: screen.missing_only, message="palette command ran")


async def test_worker_failure_shows_the_error_modal(root, demo):
    (demo.settings_file).write_text("[project]\nname = 'demo'\nbogus_key = 1\n")
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        error = await wait_screen(pilot, "ErrorScreen")
        assert "bogus_key" in error.message
        assert error.details is None  # a LoradeckError is a one-liner, not a traceback
        await pilot.press("enter")
        await wait_screen(pilot, "DatasetScreen")


async def test_unexpected_exception_shows_details(root):
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "ProjectsScreen")
        try:
            raise ValueError("boom")
        except ValueError as e:
            app.show_error(e)
        error = await wait_screen(pilot, "ErrorScreen")
        assert "ValueError: boom" in error.message and "Traceback" in error.details
        await pilot.press("escape")
        app.show_error(LoradeckError("disk full", hint="free some space"))
        error = await wait_screen(pilot, "ErrorScreen")
        assert (error.message, error.hint) == ("disk full", "free some space")


async def test_animations_are_off(root):
    app = make_app(root)
    async with app.run_test(size=(80, 24)):
        assert app.animation_level == "none"


def test_preview_mode_detection():
    assert detect_mode({"TERM": "xterm-kitty"}) == "kitty"
    assert detect_mode({"TERM_PROGRAM": "WezTerm"}) == "sixel"
    assert detect_mode({"TERM": "xterm-256color"}) == "halfblock"
    assert detect_mode({"TERM": "xterm-kitty", "TMUX": "/tmp/tmux"}) == "halfblock"
    assert detect_mode({"LORADECK_PREVIEW": "text", "TERM": "xterm-kitty"}) == "text"


NO_TORCH_FLOWS = r"""
import asyncio, json, sys
from loradeck.tui.app import LoradeckApp

async def flows(root):
    app = LoradeckApp(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        async def settle(n=20):
            for _ in range(n):
                await pilot.pause(0.05)
        await settle()
        for keys in (["k"], ["escape"], ["f"], *[[c] for c in "circle"], ["enter"], ["escape"],
                     ["enter"], ["x", "y"], ["pagedown"], ["ctrl+z"], ["escape"], ["escape"], ["n"], ["escape"],
                     ["i"], ["escape"], ["f1"], ["escape"]):
            await pilot.press(*keys)
            await settle(6)
        await app.workers.wait_for_complete()
        return [type(s).__name__ for s in app.screen_stack]

screens = asyncio.run(flows(sys.argv[1]))
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("torch", "diffusers", "transformers", "peft", "accelerate", "onnxruntime"))
print(json.dumps({"heavy": heavy, "screens": screens}))
"""


def test_tui_flows_never_import_torch(root, demo):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", NO_TORCH_FLOWS, str(root)], capture_output=True, text=True,
                         env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["screens"][-1] == "ProjectsScreen"  # the flows really ran and came back out


async def test_train_and_runs_keys_open_part_two_screens(root, demo):
    app = make_app(root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "ProjectsScreen")
        await wait_until_async(pilot, lambda: projects_listed(screen, 1))
        await pilot.press("t")
        train = await wait_screen(pilot, "TrainFormScreen")
        assert train.project.name == "demo"
        app.pop_screen()
        await wait_screen(pilot, "ProjectsScreen")
        await pilot.press("r")
        runs = await wait_screen(pilot, "RunsScreen")
        assert runs.project.name == "demo"


async def test_monitor_entry_opens_the_monitor_screen(root, demo):
    app = make_app(root, monitor=("demo", None))
    async with app.run_test(size=(80, 24)) as pilot:
        monitor = await wait_screen(pilot, "MonitorScreen")
        assert monitor.project.name == "demo"


def test_monitor_of_a_missing_project_fails_with_one_line(root, cli):
    out = cli("monitor", "nope", root=root)
    assert out.returncode == 1
    assert out.stderr.strip().startswith("error:") and "nope" in out.stderr
