"""The contracts the other areas build on: layering, settings, names, atomic writes, events."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO


def _modules_loaded_by(stmt: str) -> set[str]:
    code = f"import sys; {stmt}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("stmt", [
    "import loradeck.trainer.cli; loradeck.trainer.cli.build_parser()",
    "import loradeck.trainer.dataset.project, loradeck.trainer.config.project_settings, loradeck.trainer.config.train_config, loradeck.trainer.events, loradeck.trainer.dataset.caption_store",
])
def test_engine_imports_neither_textual_nor_torch_at_import_time(stmt):
    loaded = _modules_loaded_by(stmt)
    assert not {m for m in loaded if m.split(".")[0] in {"textual", "torch", "diffusers", "transformers"}}


def test_readme_test_command_is_what_ci_runs():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    commands = [line.strip() for line in ci.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 1
    assert commands[0] in readme


def test_project_names_refuse_escapes():
    from loradeck.trainer.dataset.project import validate_name
    from loradeck.trainer.errors import ProjectError

    for bad in ["", ".", "..", "../x", "a/b", "a\\b", " lead", "x\x00", ".hidden", "a" * 65]:
        with pytest.raises(ProjectError):
            validate_name(bad)
    for good in ["cats", "Miyazaki style", "v1.5_lora-2"]:
        assert validate_name(good) == good


def test_root_resolution_order(tmp_path, monkeypatch):
    from loradeck.trainer.dataset.project import resolve_root

    monkeypatch.delenv("LORADECK_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    # ./projects, made absolute where it is chosen (trainers start in other working folders)
    assert resolve_root() == tmp_path.resolve() / "projects"
    monkeypatch.setenv("LORADECK_ROOT", str(tmp_path / "env"))
    assert resolve_root() == tmp_path.resolve() / "env"
    assert resolve_root(tmp_path / "flag") == tmp_path.resolve() / "flag"
    assert resolve_root("rel") == tmp_path.resolve() / "rel"


def test_settings_keep_comments_and_refuse_unknown_keys(root):
    from loradeck.trainer.config import project_settings as settings
    from loradeck.trainer.dataset.project import create_project
    from loradeck.trainer.errors import ConfigError

    proj = create_project("p", root, trigger_word="sks")
    text = proj.settings_file.read_text() + "\n# my own note\n"
    proj.settings_file.write_text(text)
    s = settings.update(proj.settings_file, "train", {"rank": 8})
    assert s.train == {"rank": 8} and s.project.trigger_word == "sks"
    assert "# my own note" in proj.settings_file.read_text()
    with pytest.raises(ConfigError, match="trigger_wrod"):
        settings.update(proj.settings_file, "project", {"trigger_wrod": "x"})
    with pytest.raises(ConfigError, match="rnak"):
        settings.update(proj.settings_file, "train", {"rnak": 8})
    assert "trigger_wrod" not in proj.settings_file.read_text()  # refused writes change nothing
    proj.settings_file.write_text(proj.settings_file.read_text() + "\n[mystery]\nx = 1\n")
    with pytest.raises(ConfigError, match="mystery"):
        settings.load(proj.settings_file)


def test_atomic_write_failure_leaves_original_and_no_debris(tmp_path, monkeypatch):
    from loradeck.trainer import atomic

    target = tmp_path / "caption.txt"
    target.write_text("precious")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic.atomic_write_text(target, "new text")
    monkeypatch.undo()
    assert target.read_text() == "precious"
    assert [p.name for p in tmp_path.iterdir()] == ["caption.txt"]


def test_event_reader_holds_back_partial_lines(tmp_path):
    from loradeck.trainer.events import EventReader, EventWriter

    path = tmp_path / "events.jsonl"
    w = EventWriter(path)
    w.emit("step", step=1, total_steps=2, epoch=0, loss=float("nan"), lr=1e-4)
    r = EventReader(path)
    assert [e["step"] for e in r.read_new()] == [1]
    with open(path, "a") as fh:
        fh.write('{"type": "step", "ti')
    assert r.read_new() == []
    with open(path, "a") as fh:
        fh.write('me": 1, "step": 2}\n')
    assert [e["step"] for e in r.read_new()] == [2]
    with pytest.raises(ValueError):
        w.emit("error", kind="oom")  # required fields are enforced
    assert json.loads(path.read_text().splitlines()[0])["loss"] == "nan"
