"""Launching, stopping, killing and resuming real trainer processes (the fake trainer: same contract)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from loradeck.trainer.cli import main as cli_main
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import read_all
from loradeck.trainer.runs import lifecycle as runs
from tests.fake_trainer import children_can_import_tests
from tests.waiting import wait_until


def steps_of(files):
    return [e["step"] for e in read_all(files.events) if e["type"] == "step"]


def start_slow_exiting_run(project, reap, monkeypatch, exit_seconds: str):
    """A fake run of 200 steps of 0.1 s whose process takes `exit_seconds` to exit after it reports
    stopped; returns (files, pid) once it is running."""
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.1")
    monkeypatch.setenv("FAKE_EXIT_SECONDS", exit_seconds)
    files = runs.create_run(project, {"max_train_steps": 200, "resolution": 64})
    pid = runs.start(files)
    reap(pid)
    wait_until(lambda: runs.run_state(files) == "running" and steps_of(files))
    return files, pid


def test_detached_start_runs_in_its_own_session_and_logs_to_train_log(project, fake_trainer, reap):
    files = runs.create_run(project, {"max_train_steps": 5, "resolution": 64})
    pid = runs.start(files)
    reap(pid)
    assert os.getsid(pid) == pid != os.getsid(0)      # a new session: SIGHUP of our terminal never reaches it
    assert os.getpgid(pid) == pid
    assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
    launch = json.loads(files.launch.read_text())
    assert launch["pid"] == pid and launch["command"][-3:] == ["-m", fake_trainer, str(files.dir)]
    assert wait_until(lambda: runs.run_state(files) == "completed")
    assert "fake trainer pid" in files.log.read_text()
    [info] = runs.list_runs(project)
    assert (info.state, info.step, info.total_steps) == ("completed", 5, 5)
    assert info.output == str(files.output("lora"))


def test_stop_sends_sigterm_and_waits_for_the_saved_stop(project, fake_trainer, reap, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.3")
    files = runs.create_run(project, {"max_train_steps": 200, "resolution": 64})
    reap(runs.start(files))
    wait_until(lambda: runs.run_state(files) == "running" and steps_of(files))
    report = runs.stop(files, timeout=20)
    assert report["ok"] and report["state"] == "stopped" and not report["forced"]
    finished = [e for e in read_all(files.events) if e["type"] == "run_finished"]
    assert finished[-1]["status"] == "stopped" and finished[-1]["steps_done"] < 200
    with pytest.raises(LoradeckError, match="not running"):
        runs.stop(files)


def test_stop_returns_only_once_the_trainer_process_has_exited_so_resume_works_at_once(
        project, fake_trainer, reap, monkeypatch):
    # The trainer reports `stopped`, then takes a while to exit (tearing down): stop must wait for
    # the exit, or an immediate resume is refused ("its trainer is still alive").
    files, pid = start_slow_exiting_run(project, reap, monkeypatch, "1.5")
    report = runs.stop(files, timeout=20)
    assert report["ok"] and report["state"] == "stopped"
    assert not runs.process_alive(pid) and runs.lingering_pid(files) is None
    assert report["waited_s"] >= 1.0
    monkeypatch.setenv("FAKE_EXIT_SECONDS", "0")
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.01")
    reap(runs.resume(files, detach=True))
    assert wait_until(lambda: runs.run_state(files) == "completed")


def test_stop_gives_up_after_its_timeout_when_the_process_will_not_exit(project, fake_trainer, reap,
                                                                        monkeypatch):
    files, pid = start_slow_exiting_run(project, reap, monkeypatch, "30")
    t0 = time.monotonic()
    report = runs.stop(files, timeout=2)
    assert time.monotonic() - t0 < 20  # bounded by its timeout, not by the trainer's 30 s teardown
    assert not report["ok"] and report["state"] == "stopped" and runs.lingering_pid(files) == pid
    with pytest.raises(LoradeckError, match="still alive"):
        runs.resume(files)


def test_kill_9_reads_as_crashed_and_resume_ends_at_the_same_total(project, fake_trainer, reap, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.1")
    files = runs.create_run(project, {"max_train_steps": 12, "resolution": 64})
    pid = runs.start(files)
    reap(pid)
    wait_until(lambda: len(steps_of(files)) >= 3)
    os.killpg(pid, signal.SIGKILL)
    assert wait_until(lambda: runs.run_state(files) == "crashed", timeout=10)
    killed_at = steps_of(files)[-1]
    assert killed_at < 12
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.02")
    reap(runs.resume(files, detach=True))
    assert wait_until(lambda: runs.run_state(files) == "completed")
    steps = steps_of(files)
    assert steps[-1] == 12 and steps[len(steps) - (12 - killed_at):] == list(range(killed_at + 1, 13))
    with pytest.raises(LoradeckError, match="already completed"):
        runs.resume(files)


def test_resume_refuses_a_running_run(project, fake_trainer, reap, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.3")
    files = runs.create_run(project, {"max_train_steps": 100, "resolution": 64})
    reap(runs.start(files))
    wait_until(lambda: runs.run_state(files) in runs.ACTIVE)
    with pytest.raises(LoradeckError, match="still (starting|running)"):
        runs.resume(files)
    runs.stop(files, timeout=20, force=True)


def test_stop_while_starting_is_a_stop_not_a_crash(project, reap, monkeypatch):
    # A "trainer" that is still importing when the stop arrives: no handler installed yet.
    monkeypatch.setattr(runs, "TRAIN_MODULE", "tests.runs.slow_import")
    files = runs.create_run(project, {"max_train_steps": 3, "resolution": 64})
    reap(runs.start(files))
    assert runs.run_state(files) == "starting"
    report = runs.stop(files, timeout=10)
    assert report["state"] == "stopped"
    assert runs.run_state(files) == "stopped"


def test_foreground_train_forwards_ctrl_c_and_exits_with_the_runs_status(project, fake_trainer, monkeypatch,
                                                                         capsys):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.2")
    done = threading.Event()

    def ctrl_c_after_the_first_step():  # what a user pressing Ctrl-C in the terminal does to the CLI
        def first_step_or_done():
            folders = runs.run_folders(project)
            return done.is_set() or (folders and steps_of(folders[0]))

        wait_until(first_step_or_done, 60, message="the first step of the foreground run")
        if not done.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    presser = threading.Thread(target=ctrl_c_after_the_first_step, daemon=True)
    presser.start()
    try:
        code = cli_main(["train", "toy", "--steps", "100", "--resolution", "64", "--json"])
    finally:
        done.set()
        presser.join()
    out = json.loads(capsys.readouterr().out)
    assert code == 2 and out["state"] == "stopped" and 0 < out["step"] < 100
    assert out["exit_code"] == 2 and out["ok"] is False


def test_foreground_train_completes_with_exit_0(project, fake_trainer, capsys):
    code = cli_main(["train", "toy", "--steps", "3", "--resolution", "64"])
    captured = capsys.readouterr()
    assert code == 0
    assert "completed at step 3/3" in captured.out and "lora.safetensors" in captured.out


def test_foreground_failure_exits_1_and_shows_error_with_hint(project, fake_trainer, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_FAIL", "1")
    code = cli_main(["train", "toy", "--steps", "2", "--resolution", "64"])
    captured = capsys.readouterr()
    assert code == 1
    assert "loss is nan" in captured.err and "lower the learning rate" in captured.err


def test_foreground_trainer_that_cannot_start_fails_with_the_logs_error_line(project, monkeypatch, capsys):
    """A trainer that dies before it starts (here: it cannot be imported) is failed, not crashed,
    says the log's error line and points at a new run, not at resume."""
    monkeypatch.setattr(runs, "TRAIN_MODULE", "tests.runs.no_such_trainer_module")
    children_can_import_tests(monkeypatch)  # so the error names the missing module, not `tests`
    code = cli_main(["train", "toy", "--steps", "2", "--resolution", "64"])
    captured = capsys.readouterr()
    assert code == 1 and "failed at step 0" in captured.out and "resume with" not in captured.out
    assert "the trainer exited before it started: " in captured.out
    assert "No module named tests.runs.no_such_trainer_module" in captured.out
    assert "start a new run: loradeck train toy" in captured.out


def test_a_second_stop_waits_for_a_run_that_reported_stopped_but_is_still_exiting(project, fake_trainer, reap,
                                                                                  monkeypatch):
    files, pid = start_slow_exiting_run(project, reap, monkeypatch, "2")
    first = runs.stop(files, timeout=0.3)          # gives up while the trainer still tears down
    wait_until(lambda: runs.run_state(files) == "stopped")
    assert not first["ok"] and runs.lingering_pid(files) == pid
    second = runs.stop(files, timeout=20)          # what `loradeck stop` run again does
    assert second["ok"] and second["state"] == "stopped" and second["pid"] == pid
    assert not runs.process_alive(pid)
    finished = [e for e in read_all(files.events) if e["type"] == "run_finished"]
    assert len(finished) == 1
    with pytest.raises(LoradeckError, match="not running"):
        runs.stop(files)
