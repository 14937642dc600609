"""A run's samples as a grid (steps × prompts) with the LoRA of each step, and its contact sheet."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from loradeck.trainer.atomic import TMP_PREFIX
from loradeck.trainer.dataset.project import create_project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs import sample_grid
from tests.conftest import run_cli
from tests.runs.sampled_run import PROMPTS, RUN_ID, make_sampled_run, path_of


@pytest.fixture
def project(root):
    return create_project("hero", root, base_model="synthetic:tiny")


def test_grid_has_steps_prompts_and_the_lora_of_each_step(project):
    files = make_sampled_run(project, missing={(4, 1)})
    grid = sample_grid.collect(files.dir)
    assert grid.steps == [2, 4, 6] and grid.prompts == PROMPTS
    assert grid.cell(2, 1) == path_of(files, 2, 1) and grid.cell(4, 1) is None
    assert [grid.export_choice(s) for s in grid.steps] == ["2", "4", ""]  # the last step: the final LoRA
    assert [grid.lora_label(s) for s in grid.steps] == ["ckpt", "ckpt", "final"]


def test_a_pruned_checkpoint_leaves_its_step_without_a_lora(project):
    files = make_sampled_run(project)
    files.checkpoint("lora", 2).unlink()
    grid = sample_grid.collect(files.dir)
    assert grid.export_choice(2) is None and grid.lora_label(2) == "-"


def test_samples_without_events_are_found_by_file_name_with_prompts_from_the_config(project):
    files = make_sampled_run(project)
    files.events.write_text("")
    grid = sample_grid.collect(files.dir)
    assert grid.steps == [2, 4, 6] and grid.prompts == PROMPTS and len(grid.cells) == 6


def test_contact_sheet_is_labelled_steps_by_prompts_and_written_atomically(project):
    files = make_sampled_run(project, missing={(4, 1)})
    grid = sample_grid.collect(files.dir)
    path = sample_grid.write_contact_sheet(grid, thumb=64)
    assert path == files.dir / sample_grid.CONTACT_SHEET
    assert not [p for p in files.dir.iterdir() if p.name.startswith(TMP_PREFIX)]
    with Image.open(path) as sheet:
        sheet = sheet.convert("RGB")
        pad, label_w, head_h = sample_grid._PAD, sample_grid._LABEL_W, sample_grid._HEAD_H
        assert sheet.size == (label_w + 2 * (64 + pad) + pad, head_h + 3 * (64 + pad) + pad)
        # each cell shows its own sample (the colour encodes step and prompt), the missing one a box
        for r, step in enumerate((2, 4, 6)):
            for k in range(2):
                x, y = label_w + k * (64 + pad), head_h + r * (64 + pad)
                if (step, k) == (4, 1):
                    assert sheet.getpixel((x, y)) == (90, 90, 90) and sheet.getpixel((x + 4, y + 4)) == (24, 24, 28)
                else:
                    assert sheet.getpixel((x + 32, y + 32)) == (40 * step, 100 * k, 30)
        # labels are drawn: the label column and the header hold light text pixels
        label = sheet.crop((0, head_h, label_w, head_h + 40))
        header = sheet.crop((label_w, 0, sheet.width, head_h))
        assert max(p[0] for p in label.getdata()) > 200 and max(p[0] for p in header.getdata()) > 200


def test_a_run_without_samples_has_no_contact_sheet(project):
    files = make_sampled_run(project)
    for p in files.samples.iterdir():
        p.unlink()
    files.events.write_text("")
    with pytest.raises(LoradeckError, match="has no samples"):
        sample_grid.write_contact_sheet(sample_grid.collect(files.dir))


def test_cli_samples_lists_the_grid_and_writes_the_sheet(project):
    files = make_sampled_run(project)
    proc = run_cli("samples", "hero", "--sheet", "--json", root=project.root)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["run"] == RUN_ID and data["prompts"] == PROMPTS
    assert [(s["step"], s["lora"], s["checkpoint"]) for s in data["steps"]] == \
        [(2, "ckpt", "2"), (4, "ckpt", "4"), (6, "final", "")]
    assert data["sheet"] == str(files.dir / "contact_sheet.png") and (files.dir / "contact_sheet.png").is_file()
    text = run_cli("samples", "hero", RUN_ID[:12], root=project.root)
    assert "step       4  ckpt   2/2 sample(s)" in text.stdout and "--checkpoint STEP" in text.stdout


def test_cli_samples_of_a_project_without_runs_is_a_one_line_error(project):
    proc = run_cli("samples", "hero", root=project.root)
    assert proc.returncode == 1 and proc.stderr.startswith("error: project 'hero' has no runs")


@pytest.mark.slow
def test_contact_sheet_of_a_real_finished_run(root, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (80, 80), (40 * i, 120, 200)).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text(f"sks, red hat, pose {i}")
    for args in (("init", "hero", "--trigger", "sks"), ("import", "hero", str(images)),
                 ("prep", "hero", "--resolution", "64")):
        assert run_cli(*args, root=root).returncode == 0
    proc = run_cli("train", "hero", "--base-model", "synthetic:tiny", "--steps", "4", "--resolution", "64",
                   "--mixed-precision", "no", "--sample-prompt", "sks", "--sample-prompt", "sks, red hat",
                   "--sample-every-steps", "2", "--sample-steps", "2", "--save-every-steps", "2", "--json",
                   root=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = run_cli("samples", "hero", "--sheet", "--json", root=root)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["prompts"] == ["sks", "sks, red hat"]
    assert [(s["step"], s["lora"]) for s in data["steps"]] == [(2, "ckpt"), (4, "final")]
    assert all(all(s["samples"]) for s in data["steps"])
    with Image.open(data["sheet"]) as sheet:
        assert sheet.width > 2 * sample_grid.THUMB and sheet.height > 2 * sample_grid.THUMB
