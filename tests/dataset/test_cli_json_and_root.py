"""--json covers usage errors too, and a --root that is a file is an error, not "no projects" (item 12.12)."""

from __future__ import annotations

import json


def test_a_usage_error_under_json_prints_one_json_object(cli, root):
    proc = cli("train", "toy", "--steps", "many", "--json", root=root)
    assert proc.returncode == 2
    out = json.loads(proc.stdout)
    assert out["ok"] is False and "invalid int value: 'many'" in out["error"]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: loradeck train:")
    proc = cli("--json", "nosuchcommand", root=root)
    assert proc.returncode == 2 and json.loads(proc.stdout)["ok"] is False


def test_a_usage_error_without_json_prints_nothing_on_stdout(cli, root):
    proc = cli("train", "toy", "--steps", "many", root=root)
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr.startswith("error: loradeck train:")


def test_a_root_that_is_a_file_is_an_error_for_listing_opening_and_creating(cli, tmp_path):
    not_a_folder = tmp_path / "projects.txt"
    not_a_folder.write_text("not a folder")
    for args in (("projects",), ("check", "toy"), ("init", "toy")):
        proc = cli(*args, root=not_a_folder)
        assert proc.returncode == 1, (args, proc.stdout)
        assert proc.stderr.startswith(f"error: projects root {not_a_folder} is not a folder"), (args, proc.stderr)
    proc = cli("projects", "--json", root=not_a_folder)
    assert json.loads(proc.stdout)["ok"] is False


def test_a_root_that_does_not_exist_yet_still_lists_no_projects(cli, tmp_path):
    proc = cli("projects", root=tmp_path / "new")
    assert proc.returncode == 0 and proc.stdout.strip() == "no projects"
