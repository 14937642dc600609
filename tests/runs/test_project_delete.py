"""Deleting a project never pulls the folder out from under a live run; half-deleted projects are
listed as damaged and can be repaired or removed (CLI side; the TUI's dialog is in tests/tui)."""

from __future__ import annotations

import json
import shlex

import pytest

from loradeck.trainer.dataset.project import Project, create_project, is_damaged, list_projects
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs import live as live_runs
from loradeck.trainer.runs.live import delete_project
from tests.runs.conftest import write_images
from tests.runs.test_process import steps_of
from tests.waiting import wait_until


@pytest.fixture
def qa_cats(root):
    proj = create_project("qa cats", root, trigger_word="sks", base_model="synthetic:tiny")
    write_images(proj.dataset)
    return proj


def start_live_run(project, reap):
    files = runs.create_run(project, {"max_train_steps": 2000, "resolution": 64})
    reap(runs.start(files))
    wait_until(lambda: runs.run_state(files) == "running" and steps_of(files))
    return files


def test_a_project_with_a_running_run_is_not_deleted_and_the_error_names_the_run_and_its_stop_command(
        qa_cats, fake_trainer, reap):
    files = start_live_run(qa_cats, reap)
    with pytest.raises(live_runs.ProjectBusy) as refused:
        delete_project(qa_cats)
    assert qa_cats.settings_file.is_file() and files.config.is_file()
    assert files.run_id in str(refused.value)
    assert f"loradeck stop 'qa cats' {files.run_id}" in refused.value.hint
    # The stop command in the hint works as given, then the delete goes through.
    stop_args = shlex.split(refused.value.hint.split("stop first with: ")[1])
    from loradeck.trainer.cli import main as cli_main

    assert cli_main(stop_args[1:] + ["--root", str(qa_cats.root)]) == 0
    delete_project(qa_cats)
    assert not qa_cats.path.exists()


def test_cli_delete_refuses_a_live_run_with_the_run_ids_and_stop_commands_in_json(qa_cats, fake_trainer, reap, cli):
    files = start_live_run(qa_cats, reap)
    proc = cli("delete", "qa cats", "--yes", "--json", root=qa_cats.root)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["ok"] is False and [r["run_id"] for r in out["runs"]] == [files.run_id]
    assert out["stop_commands"] == [f"loradeck stop 'qa cats' {files.run_id}"]
    assert proc.stderr.startswith("error: cannot delete project 'qa cats'") and proc.stderr.count("\n") == 1
    assert qa_cats.settings_file.is_file()


def test_any_non_terminal_state_blocks_a_delete_so_a_future_queued_state_does_too(qa_cats, monkeypatch):
    files = runs.create_run(qa_cats, {"max_train_steps": 5, "resolution": 64})
    monkeypatch.setattr(runs, "run_state", lambda f, **kw: "queued")
    monkeypatch.setattr(runs, "lingering_pid", lambda f: None)
    with pytest.raises(live_runs.ProjectBusy, match=f"{files.run_id} \\(queued\\)"):
        delete_project(qa_cats)


def test_a_hung_trainer_of_a_crashed_run_blocks_a_delete_and_the_hint_says_force(qa_cats, monkeypatch):
    files = runs.create_run(qa_cats, {"max_train_steps": 5, "resolution": 64})
    monkeypatch.setattr(runs, "run_state", lambda f, **kw: "crashed")
    monkeypatch.setattr(runs, "lingering_pid", lambda f: 4242)
    with pytest.raises(live_runs.ProjectBusy) as refused:
        delete_project(qa_cats)
    assert f"loradeck stop 'qa cats' {files.run_id} --force" in refused.value.hint


def test_cli_delete_needs_yes_when_not_at_a_terminal_and_deletes_with_it(qa_cats, cli):
    proc = cli("delete", "qa cats", root=qa_cats.root)
    assert proc.returncode == 1 and "--yes" in proc.stderr and qa_cats.path.is_dir()
    proc = cli("delete", "qa cats", "--yes", "--json", root=qa_cats.root)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["deleted"] is True and not qa_cats.path.exists()


def test_a_half_deleted_project_is_listed_as_damaged_and_repair_makes_it_a_project_again(root, cli):
    # What a trainer left behind before it refused to write into a deleted project.
    state = root / "qa cats" / "runs" / "20261130-101010-0001" / "state" / "step-3"
    state.mkdir(parents=True)
    (state / "meta.json").write_text("{}")
    assert list_projects(root) == [] and is_damaged(Project(root, "qa cats"))
    proc = cli("projects", "--json", root=root)
    [row] = json.loads(proc.stdout)["projects"]
    assert row["name"] == "qa cats" and row["damaged"] is True and "loradeck repair 'qa cats'" in row["problem"]
    human = cli("projects", root=root).stdout
    assert "damaged" in human and "loradeck delete 'qa cats'" in human
    proc = cli("repair", "qa cats", root=root)
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in list_projects(root)] == ["qa cats"] and (state / "meta.json").is_file()
    assert cli("repair", "qa cats", root=root).returncode == 1  # nothing to repair any more


def test_a_damaged_project_can_be_removed_with_delete(root, cli):
    (root / "half" / "originals").mkdir(parents=True)
    (root / "half" / "originals" / "a.png").write_bytes(b"x")
    proc = cli("delete", "half", "--yes", root=root)
    assert proc.returncode == 0, proc.stderr
    assert not (root / "half").exists()


def test_a_run_folder_that_was_created_but_never_launched_does_not_block_a_delete(qa_cats):
    files = runs.create_run(qa_cats, {"max_train_steps": 5, "resolution": 64})
    assert runs.run_state(files) == "starting"  # for a grace period after its folder was made
    assert live_runs.live_runs(qa_cats) == []
    delete_project(qa_cats)
    assert not qa_cats.path.exists()


class _Terminal:
    """stdin of a person at a terminal who types `answer`."""

    def __init__(self, answer: str):
        self.answer = answer

    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        return self.answer


def test_cli_delete_at_a_terminal_asks_and_only_y_deletes(qa_cats, monkeypatch, capsys):
    import sys

    from loradeck.trainer.cli import main as cli_main

    monkeypatch.setattr(sys, "stdin", _Terminal("\n"))  # Enter alone: the default is no
    assert cli_main(["delete", "qa cats"]) == 1
    assert "Delete project 'qa cats'" in capsys.readouterr().err and qa_cats.path.is_dir()
    monkeypatch.setattr(sys, "stdin", _Terminal("y\n"))
    assert cli_main(["delete", "qa cats"]) == 0
    assert not qa_cats.path.exists()
