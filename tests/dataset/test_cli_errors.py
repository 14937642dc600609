"""CLI failure conventions: every failure is one `error:` line on stderr and a non-zero exit."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import pytest

from loradeck.trainer import cli as cli_pkg
from loradeck.trainer.cli import CommandResult
from loradeck.trainer.dataset.project import create_project
from tests.conftest import REPO


def test_a_closed_pipe_ends_the_command_quietly_without_a_traceback(root):
    project = create_project("many", root)
    project.dataset.mkdir(parents=True, exist_ok=True)
    for i in range(3000):  # far more than a pipe buffer of `captions list` output
        (project.dataset / f"img_{i:04d}.png").write_bytes(b"")
        (project.dataset / f"img_{i:04d}.txt").write_text(f"caption number {i}, " + "word " * 10)
    env = {**os.environ, "PYTHONPATH": str(REPO), "LORADECK_ROOT": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "loradeck.tui", "captions", "list", "many"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    proc.stdout.readline()   # what `| head -1` does: read a line, then go away
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.wait(timeout=60)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert proc.returncode == 141


def test_usage_errors_are_one_line(cli, root):
    proc = cli("stop", root=root)  # the project name is missing
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: loradeck stop:")
    assert "--help" in proc.stderr
    proc = cli("train", "toy", "--steps", "many", root=root)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "invalid int value: 'many'" in proc.stderr


@pytest.mark.parametrize("as_json", [False, True])
def test_an_uncaught_os_error_is_one_line_not_a_traceback(monkeypatch, capsys, as_json):
    def full_disk(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/mnt/shared/x.safetensors")

    def register(sub, parent):
        sub.add_parser("boom", parents=[parent]).set_defaults(handler=full_disk)

    code = cli_pkg.main(["boom"] + (["--json"] if as_json else []), extra=[register])
    out, err = capsys.readouterr()
    assert code == 1
    assert err == "error: No space left on device: /mnt/shared/x.safetensors\n"
    if as_json:
        assert out.startswith('{"ok": false, "error": "No space left on device')
    else:
        assert out == ""


def test_a_broken_pipe_while_printing_is_quiet(monkeypatch, capsys):
    class GoneReader:
        def write(self, text):
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")

        def flush(self):
            pass

    def register(sub, parent):
        sub.add_parser("talk", parents=[parent]).set_defaults(handler=lambda a: CommandResult({}, "hello"))

    monkeypatch.setattr(sys, "stdout", GoneReader())
    assert cli_pkg.main(["talk"], extra=[register]) == 141
    assert capsys.readouterr().err == ""


def test_captions_import_of_a_file_where_no_row_names_an_image_fails(cli, root, tmp_path):
    project = create_project("meta", root)
    project.dataset.mkdir(parents=True, exist_ok=True)
    (project.dataset / "a.png").write_bytes(b"")
    (project.dataset / "a.txt").write_text("kept caption")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text('{bad\n{"file_name": "other.png", "text": "x"}\n')
    proc = cli("captions", "import", "meta", str(garbage), "--json", root=root)
    assert proc.returncode == 1 and json.loads(proc.stdout)["ok"] is False
    assert proc.stderr == (f"error: nothing imported from {garbage}: 1 bad line(s), 1 row(s) naming no image"
                           " in meta's dataset\n")
    assert (project.dataset / "a.txt").read_text() == "kept caption"
    good = tmp_path / "good.jsonl"
    good.write_text('{"file_name": "a.png", "text": "new caption"}\n{bad\n')
    proc = cli("captions", "import", "meta", str(good), "--overwrite", root=root)
    assert proc.returncode == 0 and proc.stderr == "" and "line 2" in proc.stdout
    assert (project.dataset / "a.txt").read_text().strip() == "new caption"


def test_a_project_that_lost_its_project_toml_says_so_and_init_restores_it_keeping_the_files(cli, root):
    project = create_project("lost", root, trigger_word="sks")
    (project.originals / "a.png").write_bytes(b"original bytes")
    (project.dataset / "a.txt").write_text("a caption")
    project.settings_file.unlink()
    proc = cli("check", "lost", root=root)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"error: {project.path} has no project.toml")
    assert "loradeck repair lost" in proc.stderr
    proc = cli("init", "lost", root=root)
    assert proc.returncode == 0, proc.stderr
    assert project.settings_file.is_file()
    assert (project.originals / "a.png").read_bytes() == b"original bytes"
    assert (project.dataset / "a.txt").read_text() == "a caption"
    assert cli("check", "lost", root=root).stderr.count("has no project.toml") == 0


def test_init_still_refuses_a_folder_that_is_not_a_project(cli, root):
    (root / "photos").mkdir()
    (root / "photos" / "holiday.jpg").write_bytes(b"mine")
    proc = cli("init", "photos", root=root)
    assert proc.returncode == 1 and "already exists" in proc.stderr
    assert sorted(p.name for p in (root / "photos").iterdir()) == ["holiday.jpg"]


def test_a_non_ascii_project_name_is_refused_saying_ascii(cli, root):
    proc = cli("init", "ünï", root=root)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "ASCII letters" in proc.stderr
    assert list(root.iterdir()) == []


def test_importing_a_folder_with_no_files_is_an_error_not_a_silent_success(cli, root, tmp_path):
    create_project("empty", root)
    folder = tmp_path / "nothing here"
    (folder / "sub").mkdir(parents=True)
    proc = cli("import", "empty", str(folder), "--json", root=root)
    assert proc.returncode == 1 and json.loads(proc.stdout)["ok"] is False
    assert proc.stderr == f"error: no files to import found in {folder}\n"


@pytest.mark.parametrize("bad", ["0", "-64"])
def test_prep_refuses_a_zero_or_negative_resolution_instead_of_using_the_default(cli, root, bad):
    create_project("res", root)
    proc = cli("prep", "res", "--resolution", bad, root=root)
    assert proc.returncode == 1 and proc.stderr == f"error: resolution must be a multiple of 8 and at least 8, got {bad}\n"


def test_check_refuses_a_zero_resolution_instead_of_using_the_default(cli, root):
    create_project("res0", root)
    proc = cli("check", "res0", "--resolution", "0", root=root)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "resolution: must be at least" in proc.stderr
