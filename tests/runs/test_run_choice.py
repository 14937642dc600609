"""Commands without a run id (`loradeck stop cats`): the one active run, else the newest, said on
stderr and in --json; several active runs are listed and refused. And runs whose trainer died
before it started: failed with the log's error line, not crashed, and not resumable."""

from __future__ import annotations

import json
import sys

import pytest

from loradeck.trainer.cli import main as cli_main
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs import lifecycle as runs
from loradeck.tui.launcher import main as loradeck_main
from tests.fake_trainer import children_can_import_tests
from tests.waiting import wait_until


def running_run(project, reap, steps=400):
    files = runs.create_run(project, {"max_train_steps": steps, "resolution": 64})
    reap(runs.start(files))
    wait_until(lambda: runs.run_state(files) == "running")
    return files


def test_stop_without_a_run_id_stops_the_only_active_run_and_says_which(project, fake_trainer, reap, capsys,
                                                                         monkeypatch):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.1")
    done = runs.create_run(project, {"max_train_steps": 1, "resolution": 64})
    runs.launch(done).wait()
    active = running_run(project, reap)
    code = cli_main(["stop", "toy", "--json"])
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert code == 0 and report["run_id"] == active.run_id and report["state"] == "stopped"
    assert report["chosen"] == "the only active run of toy"
    assert f"run {active.run_id}: the only active run of toy" in captured.err
    assert runs.run_state(done) == "completed"


def test_stop_without_a_run_id_lists_several_active_runs_and_stops_none(project, fake_trainer, reap, capsys,
                                                                        monkeypatch):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.1")
    first, second = running_run(project, reap), running_run(project, reap)
    code = cli_main(["stop", "toy"])
    err = capsys.readouterr().err
    assert code == 1
    assert "2 active runs" in err and first.run_id in err and second.run_id in err
    assert "loradeck stop toy RUN_ID" in err
    assert runs.run_state(first) == runs.run_state(second) == "running"
    for files in (first, second):
        runs.stop(files, timeout=20, force=True)


def test_resume_without_a_run_id_continues_the_newest_run(project, fake_trainer, reap, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.1")
    files = running_run(project, reap, steps=6)
    runs.stop(files, timeout=20)
    capsys.readouterr()
    code = cli_main(["resume", "toy", "--json"])
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert code == 0 and out["run_id"] == files.run_id and out["state"] == "completed" and out["step"] == 6
    assert out["chosen"].startswith("the newest run of toy (stopped")
    assert f"run {files.run_id}: the newest run of toy" in captured.err


def test_monitor_without_a_terminal_follows_the_active_run_to_its_end(project, fake_trainer, reap, capsys,
                                                                      monkeypatch):
    """`loradeck monitor toy` in a script re-attaches to the running run and returns when it ends,
    with the run's exit status."""
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.05")
    files = runs.create_run(project, {"max_train_steps": 20, "resolution": 64})
    reap(runs.start(files))
    assert not sys.stdout.isatty()  # pytest captures it: what a script or pipe gives
    code = loradeck_main(["monitor", "toy"])
    captured = capsys.readouterr()
    assert code == 0 and runs.run_state(files) == "completed"
    assert f"run {files.run_id}: the only active run of toy" in captured.err
    assert f"run {files.run_id} completed at step 20/20" in captured.out


def test_monitor_json_of_a_failed_run_exits_1_with_its_message(project, fake_trainer, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1")
    files = runs.create_run(project, {"max_train_steps": 2, "resolution": 64})
    runs.launch(files).wait()
    code = loradeck_main(["monitor", "toy", files.run_id[:10], "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["state"] == "failed" and out["message"] == "loss is nan" and out["chosen"] is None


def test_no_run_to_choose_is_a_clear_error(project, capsys):
    assert cli_main(["stop", "toy"]) == 1
    assert "project 'toy' has no runs" in capsys.readouterr().err


# ------------------------------------------------------------------ a trainer that never started

@pytest.fixture
def unstartable(project, monkeypatch):
    """A run whose trainer module cannot be imported (a broken install), launched and gone."""
    monkeypatch.setattr(runs, "TRAIN_MODULE", "tests.runs.no_such_trainer_module")
    children_can_import_tests(monkeypatch)  # so the error names the missing module, not `tests`
    files = runs.create_run(project, {"max_train_steps": 2, "resolution": 64})
    assert runs.launch(files).wait() != 0
    return files


def test_a_trainer_that_cannot_be_imported_reads_failed_with_the_logs_error_line(unstartable, project, capsys):
    assert runs.run_state(unstartable) == "failed"
    [info] = runs.list_runs(project)
    assert info.message == ("the trainer exited before it started: "
                            f"{sys.executable}: No module named tests.runs.no_such_trainer_module")
    assert cli_main(["runs", "toy"]) == 0
    out = capsys.readouterr().out
    assert "failed" in out and "crashed" not in out and "No module named" in out


def test_resume_refuses_a_run_that_never_started(unstartable, capsys):
    with pytest.raises(LoradeckError, match="cannot be resumed: the trainer exited before it started") as e:
        runs.resume(unstartable)
    assert "loradeck train toy" in e.value.hint
    assert cli_main(["resume", "toy"]) == 1
    assert "nothing was trained or saved" in capsys.readouterr().err


def test_a_trainer_given_a_missing_run_folder_exits_2_and_reads_failed(project):
    """The bug this guards: a trainer handed a run folder that does not exist where it starts
    (exit status 2, `error: .../config.toml does not exist` in train.log)."""
    files = runs.create_run(project, {"max_train_steps": 2, "resolution": 64})
    missing = files.dir / "not" / "here"
    proc = runs.launch(files, command=runs.build_command(missing))
    assert proc.wait() == 2
    assert runs.run_state(files) == "failed"
    assert runs.run_info(files).message == (f"the trainer exited before it started: {missing}/config.toml"
                                            " does not exist")


def test_a_trainer_killed_before_it_said_anything_stays_crashed(project, monkeypatch):
    """No output, no heartbeat (killed at once): nothing says it failed, so it is a crash."""
    files = runs.create_run(project, {"max_train_steps": 2, "resolution": 64})
    proc = runs.launch(files, command=[sys.executable, "-c", "import os, signal; os.kill(os.getpid(), 9)",
                                       runs.TRAIN_MODULE, str(files.dir)])
    proc.wait()
    assert runs.run_state(files) == "crashed"


def test_build_command_names_the_run_folder_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cmd = runs.build_command("projects/x/runs/r1")
    assert cmd[cmd.index(runs.TRAIN_MODULE) + 1] == str(tmp_path / "projects/x/runs/r1")
    multi = runs.build_command("projects/x/runs/r1", gpus=2)
    assert multi[multi.index(runs.TRAIN_MODULE) + 1] == str(tmp_path / "projects/x/runs/r1")
