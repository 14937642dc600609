"""The train form: inline validation, presets, the step count, launch."""

from __future__ import annotations

from textual.widgets import Button, Input, Select, Static
from tui_runs_helpers import ScreenApp, text_of

from loradeck.trainer.config import project_settings as settings
from loradeck.tui.screens.monitor import MonitorScreen
from loradeck.tui.screens.train_form import TrainFormScreen
from tests.waiting import wait_until_async


def form_app(project):
    return ScreenApp(lambda: TrainFormScreen(project))


async def set_input(pilot, screen, field: str, text: str) -> None:
    screen.query_one(f"#f-{field}", Input).value = text
    await pilot.pause()


async def test_the_form_starts_from_the_project_defaults_and_counts_the_steps(trainable):
    settings.update(trainable.settings_file, "train", {"rank": 32, "max_train_epochs": 5})
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        assert screen.query_one("#f-rank", Input).value == "32"
        assert screen.query_one("#f-base_model", Input).value == "synthetic:tiny"
        assert text_of(screen.query_one("#steps", Static)) == (
            "20 steps: 4 images × 1 repeats ÷ batch 1 = 4 steps/epoch × 5 epochs")
        await set_input(pilot, screen, "batch_size", "2")
        await set_input(pilot, screen, "repeats", "3")
        assert text_of(screen.query_one("#steps", Static)).startswith("30 steps: 4 images × 3 repeats ÷ batch 2")
        screen.query_one("#f-length-unit", Select).value = "steps"
        await set_input(pilot, screen, "length", "250")
        assert text_of(screen.query_one("#steps", Static)).startswith("250 steps (fixed)")


async def test_bad_values_are_shown_under_their_field_and_block_launch(trainable):
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await set_input(pilot, screen, "rank", "sixteen")
        await set_input(pilot, screen, "resolution", "500")
        await set_input(pilot, screen, "learning_rate", "-1")
        errors = {name: text_of(screen.query_one(f"#err-{name}", Static))
                  for name in ("rank", "resolution", "learning_rate")}
        assert errors == {"rank": "enter a whole number", "resolution": "must be a multiple of 8",
                          "learning_rate": "must be positive"}
        assert all(screen.query_one(f"#err-{n}").has_class("shown") for n in errors)
        assert not screen.query_one("#err-alpha").has_class("shown")
        assert "3 problems" in text_of(screen.query_one("#steps", Static))
        assert screen.query_one("#launch", Button).disabled
        await pilot.press("ctrl+l")
        assert isinstance(app.screen, TrainFormScreen) and not list(trainable.runs.iterdir())
        await set_input(pilot, screen, "rank", "16")
        await set_input(pilot, screen, "resolution", "512")
        await set_input(pilot, screen, "learning_rate", "1e-4")
        assert not screen.errors and not screen.query_one("#launch", Button).disabled


async def test_an_empty_dataset_is_refused_unless_the_run_has_a_fixed_step_count(project):
    app = form_app(project)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        assert "no prepared images" in text_of(screen.query_one("#problems", Static))
        assert screen.query_one("#launch", Button).disabled


async def test_presets_set_their_knobs_and_leave_the_rest(trainable):
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await set_input(pilot, screen, "output_name", "mycat")
        screen.query_one("#preset", Select).value = "2.9 GiB"
        await pilot.pause()
        assert screen.query_one("#f-gradient_checkpointing").value is True
        assert screen.query_one("#f-cache_latents").value is True
        assert screen.query_one("#f-optimizer", Select).value == "adamw8bit"
        assert screen.query_one("#f-rank", Input).value == "8"
        assert screen.query_one("#f-output_name", Input).value == "mycat"
        await pilot.press("f2")  # next preset: CPU demo
        await pilot.pause()
        assert screen.query_one("#preset", Select).value == "CPU demo"
        assert screen.query_one("#f-resolution", Input).value == "64"
        assert screen.query_one("#f-mixed_precision", Select).value == "no"
        assert text_of(screen.query_one("#steps", Static)).startswith("6 steps (fixed)")
        assert screen.config is not None and screen.config.max_train_epochs is None
        # the demo run makes samples within its steps, so the monitor shows one
        assert 0 < screen.config.sample_every_steps <= screen.config.max_train_steps


async def test_launch_creates_the_run_with_the_form_values_and_opens_its_monitor(trainable, fake_trainer):
    from loradeck.trainer.config import resolve as run_config
    from loradeck.trainer.runs import lifecycle as runs

    fake_trainer["steps"] = 3
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        screen.query_one("#preset", Select).value = "CPU demo"
        await pilot.pause()
        await set_input(pilot, screen, "rank", "2")
        screen.query_one("#f-sample_prompts").text = "a cat\na dog"
        await pilot.pause()
        await pilot.press("ctrl+l")
        await wait_until_async(pilot, lambda: isinstance(app.screen, MonitorScreen), timeout=20, message="the monitor")
        monitor = app.screen
        await wait_until_async(pilot, lambda: monitor.view is not None and monitor.view.state == "completed",
                               timeout=30,
                               message="the run to finish")
    [files] = runs.run_folders(trainable)
    cfg, _ = run_config.read_run_config(files.config)
    assert (cfg.rank, cfg.resolution, cfg.max_train_steps, cfg.base_model) == (2, 64, 6, "synthetic:tiny")
    assert cfg.sample_prompts == ["a cat", "a dog"]


async def test_a_run_launched_from_the_form_trains_for_real_stops_resumes_and_completes(trainable):
    """End to end with the real trainer (synthetic:tiny, 64 px, 8 steps, samples every 4): launch
    from the form, follow it in the monitor, stop it there, resume it there, see it complete."""
    from loradeck.trainer.runs import lifecycle as runs

    app = form_app(trainable)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = app.screen
        screen.query_one("#preset", Select).value = "CPU demo"
        await pilot.pause()
        await set_input(pilot, screen, "length", "8")
        await set_input(pilot, screen, "sample_every_steps", "4")
        screen.query_one("#f-sample_prompts").text = "a red cat"
        await pilot.pause()
        await pilot.press("ctrl+l")
        await wait_until_async(pilot, lambda: isinstance(app.screen, MonitorScreen), timeout=20, message="the monitor")
        monitor = app.screen
        await wait_until_async(pilot, lambda: monitor.view is not None and monitor.view.step >= 2, timeout=150,
                               message="two real steps")
        assert monitor.view.state == "running" and monitor.view.loss is not None
        await pilot.press("s", "y")
        await wait_until_async(pilot, lambda: monitor.view.state == "stopped", timeout=120, message="the stop")
        stopped_at = monitor.view.step
        assert stopped_at < 8
        await pilot.press("r")
        await wait_until_async(pilot, lambda: monitor.view.state == "running" and monitor.view.step > stopped_at,
                               timeout=150, message="the resumed run stepping")
        await wait_until_async(pilot, lambda: monitor.view.state in ("completed", "failed", "crashed"), timeout=150,
                               message="the run to end")
        view = monitor.view
        assert view.state == "completed", view.alerts
        assert view.step == 8 and view.loss_raw[0] == list(range(1, 9))  # one history across the resume
        assert view.sample_path and not monitor.query_one("#side").has_class("hidden")
        assert "completed" in text_of(monitor.query_one("#finished", Static))
    [files] = runs.run_folders(trainable)
    assert runs.run_info(files).output and files.output("lora").is_file()


async def test_a_broken_project_toml_is_reported_and_blocks_launch(trainable):
    text = trainable.settings_file.read_text()
    trainable.settings_file.write_text(text.replace("[train]\n", "[train]\nrnak = 4\n", 1))  # a typo
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        assert "rnak" in text_of(screen.query_one("#problems", Static))
        assert screen.query_one("#launch", Button).disabled


async def test_a_focused_choice_still_shows_its_value_in_its_one_line_row(trainable):
    # Textual's focus style gives a select a tall border; in a 1-line row that border hid the value.
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await pilot.pause()
        for select_id, shown in (("#f-length-unit", "epochs"), ("#preset", "custom"), ("#f-optimizer", "adamw")):
            select = screen.query_one(select_id, Select)
            select.focus()
            await pilot.pause()
            strips = screen._compositor.render_strips()  # what the terminal gets, line by line
            row = "".join(segment.text for segment in strips[select.region.y])
            assert shown in row, f"{select_id} focused shows {row!r}"


async def test_f3_fills_the_sample_prompts_with_the_trigger_and_frequent_tags(trainable):
    from textual.widgets import TextArea

    settings.update(trainable.settings_file, "project", {"trigger_word": "sks"})
    app = form_app(trainable)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        area = screen.query_one("#f-sample_prompts", TextArea)
        await wait_until_async(pilot, lambda: screen.prompt_suggestions, message="the suggestions")
        assert str(area.placeholder) == "one prompt per line; f3 fills in: sks · sks, a photo of a cat"
        await pilot.press("f3")
        assert area.text == "sks\nsks, a photo of a cat"
        await pilot.pause()
        assert screen.overrides()["sample_prompts"] == ["sks", "sks, a photo of a cat"]
