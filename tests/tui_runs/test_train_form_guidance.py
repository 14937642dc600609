"""The train form tells the truth before launch: the preflight for its values, a re-prep at its
resolution, a demo preset that really makes samples, legible checkboxes, its last values, and keys
that fit 80 columns (issue 12, items 2, 3 and 13)."""

from __future__ import annotations

from PIL import Image
from textual.widgets import Button, Checkbox, Input, Select, Static, TextArea
from tui_runs_helpers import ScreenApp, text_of

from loradeck.trainer.config import presets
from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.dataset import prep
from loradeck.trainer.dataset.importer import import_paths
from loradeck.trainer.dataset.project import create_project, dataset_images
from loradeck.trainer.errors import ConfigError
from loradeck.tui.form_hints import form_hint
from loradeck.tui.screens.error import ErrorScreen
from loradeck.tui.screens.train_form import TrainFormScreen
from loradeck.tui.widgets.preflight_panel import PreflightPanel
from tests.waiting import wait_until_async


def form_app(project):
    return ScreenApp(lambda: TrainFormScreen(project))


def screen_lines(screen) -> list[str]:
    return ["".join(segment.text for segment in strip) for strip in screen._compositor.render_strips()]


def prepared_at_128(root, name="big cats"):
    """A project whose 128 px originals were prepared at 128 px (as `p` at the default would)."""
    project = create_project(name, root, base_model="synthetic:tiny", trigger_word="sks cat")
    settings.update(project.settings_file, "prep", {"resolution": 128, "bucket_min_side": 64,
                                                     "bucket_max_side": 256, "bucket_step": 64})
    src = root.parent / "src"
    src.mkdir()
    for i in range(3):
        Image.new("RGB", (128, 128), (60 * i, 90, 200)).save(src / f"cat{i}.png")
        (src / f"cat{i}.txt").write_text(f"sks cat, photo {i}")
    import_paths(project, [src])
    prep.prep_project(project)
    assert {Image.open(p).size for p in dataset_images(project)} == {(128, 128)}
    return project


async def test_the_form_shows_the_preflight_for_its_values_and_re_preps_at_its_resolution(root):
    project = prepared_at_128(root)
    app = form_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        panel = screen.query_one(PreflightPanel)
        await wait_until_async(pilot, lambda: panel.checks_done >= 1, timeout=30, message="the first preflight")
        assert panel.offer is None  # prepared at the form's resolution (128): nothing to re-prep
        screen.query_one("#preset", Select).value = "CPU demo"  # 64 px
        await wait_until_async(pilot, lambda: panel.offer == 64, timeout=30, message="the preflight for 64 px")
        lines = text_of(panel.query_one("#preflight-lines", Static))
        assert "larger than the 64 px resolution" in lines
        assert "loradeck" not in lines  # the form offers a key, not a CLI command
        assert str(panel.query_one("#reprep", Button).label) == "Re-prep at 64 px (f8)"
        await wait_until_async(pilot, lambda: "Re-prep at 64 px (f8)" in "\n".join(screen_lines(screen)),
                               message="the re-prep button drawn, visible at 80x24")
        await pilot.press("f3", "f8")  # from the prompts box too (it binds f5-f7 itself)
        assert screen.query_one("#launch", Button).disabled  # not while the dataset is rewritten
        await wait_until_async(pilot, lambda: not panel.busy and panel.report is not None and panel.offer is None,
                               timeout=60, message="the re-prep and a fresh preflight")
        assert not screen.query_one("#launch", Button).disabled
        assert "larger than" not in text_of(panel.query_one("#preflight-lines", Static))
    assert {Image.open(p).size for p in dataset_images(project)} == {(64, 64)}
    assert settings.load(project.settings_file).prep.resolution == 64  # as `prep --resolution 64` leaves it


async def test_the_preflight_waits_for_the_form_to_be_still(trainable, monkeypatch):
    from loradeck.tui.widgets import preflight_panel

    monkeypatch.setattr(preflight_panel, "DEBOUNCE_SECONDS", 1.5)  # keys below come faster, even on a busy CI
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        panel = screen.query_one(PreflightPanel)
        await wait_until_async(pilot, lambda: panel.checks_done == 1, timeout=30, message="the first preflight")
        for text in ("1", "12", "128"):  # typing 128 changes the config three times
            screen.query_one("#f-resolution", Input).value = text
            await pilot.pause()
        await wait_until_async(pilot, lambda: panel.report is not None and panel.report["resolution"] == 128,
                               timeout=30, message="the preflight for 128")
        assert panel.checks_done == 2  # one check for the burst, not one per key


async def test_the_prep_dialog_preps_at_the_chosen_resolution_and_keeps_it(root):
    from loradeck.tui.app import LoradeckApp

    project = prepared_at_128(root, "cats")
    app = LoradeckApp(root, open_name="cats")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: type(app.screen).__name__ == "DatasetScreen",
                               message="the dataset screen")
        await pilot.pause(0.3)
        await pilot.press("p")
        await wait_until_async(pilot, lambda: type(app.screen).__name__ == "PrepDialog", message="the prep dialog")
        field = app.screen.query_one("#prep-resolution", Input)
        assert field.value == "128"  # the project's [prep] resolution
        field.value = "60"
        await pilot.press("enter")
        assert "multiple of 8" in text_of(app.screen.query_one("#prep-error", Static))
        assert type(app.screen).__name__ == "PrepDialog"  # a bad value is not run
        field.value = "64"
        await pilot.press("enter")
        await wait_until_async(pilot, lambda: {Image.open(p).size for p in dataset_images(project)} == {(64, 64)},
                               timeout=60, message="the prep at 64 px")
    assert settings.load(project.settings_file).prep.resolution == 64


async def test_the_cpu_demo_preset_samples_the_projects_trigger_word(trainable):
    settings.update(trainable.settings_file, "project", {"trigger_word": "sks cat"})
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        screen.query_one("#preset", Select).value = "CPU demo"
        await pilot.pause()
        assert screen.query_one("#f-sample_prompts", TextArea).text == "sks cat, a photo"
        cfg = screen.config
        # the trainer warns "no samples will be made" exactly when sampling is on without prompts
        assert cfg.sample_every_steps and cfg.sample_prompts == ["sks cat, a photo"]


async def test_the_cpu_demo_preset_keeps_prompts_already_typed_and_has_a_fallback(project):
    app = form_app(project)  # no trigger word
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        screen.query_one("#preset", Select).value = "CPU demo"
        await pilot.pause()
        assert screen.query_one("#f-sample_prompts", TextArea).text == "a photo"
        screen.query_one("#f-sample_prompts", TextArea).text = "a red cat"
        await pilot.pause()
        screen.query_one("#preset", Select).value = presets.PRESETS[1].name  # a GPU preset
        await pilot.pause()
        screen.query_one("#preset", Select).value = "CPU demo"
        await pilot.pause()
        assert screen.query_one("#f-sample_prompts", TextArea).text == "a red cat"


async def test_checkboxes_read_ticked_or_not_without_colour(trainable):
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        box = screen.query_one("#f-gradient_checkpointing")
        box.value = False
        await pilot.pause()
        assert str(box.render()).startswith("[ ]")
        box.value = True
        await pilot.pause()
        assert str(box.render()).startswith("[x]")
        # Every toggle of the form, the queue and Slurm ones too, reads the same way.
        for toggle in screen.query(Checkbox):
            for value in (False, True):
                toggle.value = value
                await pilot.pause()
                assert str(toggle.render()).startswith("[x]" if value else "[ ]"), toggle.id


async def test_the_form_remembers_its_last_values_per_project(trainable):
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        screen.query_one("#preset", Select).value = "CPU demo"
        await pilot.pause()
        screen.query_one("#f-rank", Input).value = "7"
        screen.query_one("#f-sample_prompts", TextArea).text = "a blue cat"
        await pilot.pause()
        screen.action_back()  # leaving the form keeps what it showed
        await pilot.pause()
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        assert screen.query_one("#f-rank", Input).value == "7"
        assert screen.query_one("#f-resolution", Input).value == "64"
        assert screen.query_one("#f-sample_prompts", TextArea).text == "a blue cat"
        assert screen.query_one("#preset", Select).value == "CPU demo"
        assert "last values" in text_of(screen.query_one("#head", Static))
        await pilot.press("f4")  # the project's defaults again
        await pilot.pause()
        assert screen.query_one("#f-rank", Input).value == "16"
        assert screen.query_one("#f-sample_prompts", TextArea).text == ""
    other = create_project("dogs", trainable.root, base_model="synthetic:tiny")
    app = form_app(other)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert app.screen.query_one("#f-rank", Input).value == "16"  # per project


async def test_sample_prompts_are_one_key_away_and_say_so_when_empty(trainable):
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        await pilot.press("f3")
        await pilot.pause()
        prompts = screen.query_one("#f-sample_prompts", TextArea)
        assert prompts.has_focus
        row = screen.query_one("#row-sample_prompts")
        assert 0 <= row.region.y < 24 and row.region.height > 0  # scrolled into view
        # Empty, it says what it takes (and f3 fills the suggestions, if the dataset gives any).
        assert "one prompt per line" in str(prompts.placeholder)


async def test_the_form_footer_keeps_every_shown_key_at_80_columns(trainable):
    from loradeck.tui.app import LoradeckApp

    app = LoradeckApp(trainable.root)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until_async(pilot, lambda: type(app.screen).__name__ == "ProjectsScreen", message="the projects")
        await pilot.pause(0.5)
        app.push_screen(TrainFormScreen(trainable))
        await wait_until_async(pilot, lambda: "Launch" in (screen_lines(app.screen) or [""])[-1], message="the footer")
        footer = screen_lines(app.screen)[-1]
        for key in ("^l Launch", "f2 Preset", "f3 Prompts", "^r Runs", "^q Quit", "f1 Help", "^p palette"):
            assert key in footer, footer


def test_engine_hints_name_the_form_field_not_the_cli_flag():
    assert form_hint("pip install bitsandbytes (CUDA), or use --optimizer adamw") == (
        "pip install bitsandbytes (CUDA), or use “Optimizer” adamw (train form fields)")
    assert form_hint("lower --batch-size (now 4)") == "lower “Batch size” (now 4) (train form fields)"
    assert form_hint("train with --save-every-steps N") == "train with “Save every N steps” (train form fields)"
    assert form_hint("no flags here") == "no flags here"


async def test_a_launch_refused_by_the_engine_names_the_form_field(trainable, monkeypatch):
    from loradeck.tui import run_actions

    def refuse(project, overrides, **_placement):  # gpu=, queue=: where and when it starts
        raise ConfigError("optimizer adamw8bit needs bitsandbytes, which is not installed",
                          hint="pip install bitsandbytes (CUDA), or use --optimizer adamw")

    monkeypatch.setattr(run_actions, "launch", refuse)
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+l")
        await wait_until_async(pilot, lambda: isinstance(app.screen, ErrorScreen), message="the error")
        hint = text_of(app.screen.query_one("#error-hint", Static))
        assert "--optimizer" not in hint and "“Optimizer” adamw" in hint


async def test_the_re_prep_button_holds_launch_too(root, monkeypatch):
    project = prepared_at_128(root)
    app = form_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        panel = screen.query_one(PreflightPanel)
        screen.query_one("#f-resolution", Input).value = "64"
        await wait_until_async(pilot, lambda: panel.offer == 64, timeout=30, message="the offer")
        panel.query_one("#reprep", Button).press()
        await pilot.pause()
        assert panel.busy and screen.query_one("#launch", Button).disabled
        await wait_until_async(pilot, lambda: not panel.busy and panel.report is not None,
                               timeout=60, message="the re-prep")
        assert not screen.query_one("#launch", Button).disabled
