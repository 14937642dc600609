"""Paths a user gives relative (to the working folder, or in a file) mean the same thing in every
process: they are made absolute where they are read, against the folder that gives them meaning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loradeck.trainer.cli import main as cli_main
from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.dataset.project import Project, create_project, open_project, resolve_root


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A working folder that is neither the projects root nor a project."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd.resolve()


def test_init_stores_a_relative_local_base_model_absolute(root, elsewhere, capsys):
    (elsewhere / "models" / "my-sd15").mkdir(parents=True)
    assert cli_main(["init", "cats", "--base-model", "models/my-sd15"]) == 0
    stored = settings.load(open_project("cats").settings_file).project.base_model
    assert stored == str(elsewhere / "models" / "my-sd15")


def test_a_relative_base_model_in_project_toml_is_the_project_folders(root, elsewhere):
    project = create_project("cats", root, base_model="models/sd")
    (project.path / "models" / "sd").mkdir(parents=True)
    settings.update(project.settings_file, "train", {"base_model": "models/sd", "max_train_steps": 1})
    cfg = run_config.resolve(project).config
    assert cfg.base_model == str((project.path / "models" / "sd").resolve())


def test_a_relative_base_model_flag_is_the_working_folders(root, elsewhere):
    project = create_project("cats", root, base_model="synthetic:tiny")
    (elsewhere / "model.safetensors").write_bytes(b"")
    cfg = run_config.resolve(project, {"base_model": "model.safetensors"}).config
    assert cfg.base_model == str(elsewhere / "model.safetensors")


def test_a_relative_root_becomes_absolute_on_every_project(elsewhere):
    assert Project(Path("rel"), "x").path == elsewhere / "rel" / "x"
    assert create_project("cats", "projects").root == elsewhere / "projects"


def test_export_destinations_are_absolute_against_the_folder_that_names_them(root, elsewhere, tmp_path,
                                                                                monkeypatch):
    from loradeck.trainer.config.user_config import UserConfig
    from loradeck.trainer.lora.publish import resolve_destination

    project = create_project("cats", root)
    (elsewhere / "out").mkdir()
    assert resolve_destination("out").path == elsewhere / "out"
    (project.path / "shared").mkdir()
    settings.update(project.settings_file, "export", {"dest": "shared"})
    s = settings.load(project.settings_file)
    assert resolve_destination(None, settings=s, project_dir=project.path).path == (project.path / "shared").resolve()
    conf_dir = tmp_path / "conf"
    (conf_dir / "team").mkdir(parents=True)
    user = UserConfig(path=conf_dir / "config.toml", export_dest="team")
    assert resolve_destination(None, user=user).path == (conf_dir / "team").resolve()


def test_import_records_where_each_file_came_from_absolute(root, elsewhere):
    from PIL import Image

    from loradeck.trainer.dataset.importer import import_paths, load_index

    (elsewhere / "photos").mkdir()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(elsewhere / "photos" / "a.png")
    project = create_project("cats", root)
    import_paths(project, ["photos"])
    [entry] = load_index(project).values()
    assert entry["source"] == str(elsewhere / "photos" / "a.png")


def test_task_subprocess_gets_an_absolute_root(elsewhere, monkeypatch):
    from loradeck.tui.task_process import task_argv

    monkeypatch.delenv("LORADECK_ROOT", raising=False)
    argv = task_argv("prep", Project(resolve_root(), "cats"))
    assert argv[argv.index("--root") + 1] == str(elsewhere / "projects")


def test_the_validate_child_gets_absolute_paths(elsewhere, monkeypatch):
    from loradeck.trainer.lora import validate as lora_validate

    (elsewhere / "base").mkdir()
    seen = {}

    def fake_run(cmd, **kwargs):
        seen["cmd"] = cmd
        return subprocess.CompletedProcess(cmd, 0, stderr="", stdout=json.dumps(
            {"type": "task_finished", "task": "validate", "status": "completed", "report": {"problems": []}}))

    monkeypatch.setattr(lora_validate.children, "run_watched", fake_run)
    assert lora_validate._check_loads_isolated("out/x.safetensors", "base") == []
    cmd = seen["cmd"]
    assert cmd[cmd.index("validate") + 1] == str(elsewhere / "out" / "x.safetensors")
    assert cmd[cmd.index("--base") + 1] == str(elsewhere / "base")
    assert cmd[0] == sys.executable
