"""An SDXL project trains from the TUI as an SD 1.x one does: import and prep (engine), the train form shows the
SDXL base model, Ctrl+L, the monitor follows the run to `completed`, and the file is a kohya SDXL LoRA."""

from __future__ import annotations

import pytest
from PIL import Image
from textual.widgets import Input
from tui_runs_helpers import train_from_the_form

from loradeck.trainer.dataset.importer import import_paths
from loradeck.trainer.dataset.prep import prep_project
from loradeck.trainer.dataset.project import create_project
from loradeck.trainer.events import read_all
from loradeck.trainer.lora.validate import validate
from loradeck.trainer.runs import lifecycle as runs
from loradeck.tui.app import LoradeckApp

pytestmark = pytest.mark.slow


async def test_an_sdxl_tiny_project_trains_from_the_train_form_to_a_kohya_sdxl_file(root, tmp_path):
    project = create_project("xl cats", root, base_model="synthetic:sdxl-tiny", trigger_word="zxq")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (size, colour) in enumerate([((96, 64), (200, 40, 40)), ((64, 96), (40, 200, 40)),
                                        ((80, 80), (40, 40, 200))]):
        Image.new("RGB", size, colour).save(photos / f"p{i}.png")
        (photos / f"p{i}.txt").write_text(f"a cat, colour {i}")
    import_paths(project, [photos])
    prep_project(project, resolution=64)

    app = LoradeckApp(str(root), open_name=project.name)
    async with app.run_test(size=(100, 30)) as pilot:
        def is_sdxl(form):
            assert form.query_one("#f-base_model", Input).value == "synthetic:sdxl-tiny"

        monitor = await train_from_the_form(pilot, app, steps=2, check_form=is_sdxl)
        assert monitor.view.state == "completed", (monitor.view.alerts, monitor.view.log_tail[-5:])
    [files] = runs.run_folders(project)
    started = next(e for e in read_all(files.events) if e["type"] == "run_started")
    assert started["model_family"] == "sdxl"
    report = validate(files.output("lora"), load_check=False)
    assert report.ok and report.family == "sdxl" and report.layout == "kohya", report.summary()
    assert report.metadata.get("ss_base_model_version") == "sdxl_base_v1-0"
