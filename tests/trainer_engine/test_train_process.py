"""The trainer as a process, started the way loradeck.trainer.runs.lifecycle starts it: signals, heartbeat, resume, exit codes."""

from __future__ import annotations

import json
import os
import signal
import subprocess

from engine_helpers import PYTHON, REPO, events_of, run_trainer

from tests.waiting import wait_until


def read_status(run) -> dict:
    return json.loads((run / "status.json").read_text())


def test_sigterm_stops_after_the_step_saves_state_and_resume_finishes_the_run(make_run):
    run = make_run(max_train_steps=60, batch_size=1, save_precision="fp32")
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    with open(run / "train.log", "ab") as log:
        proc = subprocess.Popen([PYTHON, "-m", "loradeck.trainer.train.process", str(run)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True)
    try:
        wait_until(lambda: events_of(run, "step") or proc.poll() is not None, 240, interval=0.2,
                   message="the first step (or the trainer's exit)")
        # status.json is rewritten by the heartbeat thread about every second, so it may still say
        # "starting" just after the first step event: give it a few beats.
        status = wait_until(lambda: (s := read_status(run))["state"] == "running" and s, 10, interval=0.2,
                            message="status.json to say running")
        assert status["pid"] == proc.pid
        # Alive and beating: the heartbeat is rewritten (about every second).
        wait_until(lambda: read_status(run)["heartbeat"] > status["heartbeat"], 10, interval=0.2,
                   message="a newer heartbeat")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    [done] = events_of(run, "run_finished")
    stopped_at = done["steps_done"]
    assert done["status"] == "stopped" and 1 <= stopped_at < 60
    assert (run / "state" / f"step-{stopped_at}" / "meta.json").is_file()
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"
    assert "stopping after the current step" in (run / "train.log").read_text()

    resumed = run_trainer(run, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [s["step"] for s in events_of(run, "step")] == list(range(1, 61))
    last = events_of(run, "run_finished")[-1]
    assert last["status"] == "completed" and last["steps_done"] == 60 and (run / "out.safetensors").is_file()


def test_unreadable_run_folder_exits_2(tmp_path):
    proc = run_trainer(tmp_path / "no-such-run")
    assert proc.returncode == 2 and "config.toml" in proc.stderr


def test_kill_9_then_resume_continues_from_the_last_saved_state(make_run):
    run = make_run(max_train_steps=5, batch_size=1, save_every_steps=1)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([PYTHON, "-m", "loradeck.trainer.train.process", str(run)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, cwd=REPO, start_new_session=True)
    try:
        wait_until(lambda: events_of(run, "checkpoint") or proc.poll() is not None, 240, interval=0.1,
                   message="the first checkpoint (or the trainer's exit)")
        proc.kill()  # SIGKILL: no run_finished, no final save
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    if events_of(run, "run_finished"):  # finished before the kill landed: nothing left to prove
        return
    saved = sorted(int(p.name.split("-")[1]) for p in (run / "state").glob("step-*"))
    assert saved, "a checkpoint event means its state was saved"
    resumed = run_trainer(run, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    starts = events_of(run, "run_started")
    assert starts[-1]["start_step"] == saved[-1]
    last = events_of(run, "run_finished")[-1]
    assert last["status"] == "completed" and last["steps_done"] == 5


def test_process_exits_with_the_runs_code_and_a_complete_log_even_when_stdout_is_buffered(make_run):
    # The process skips the interpreter's module teardown at exit; its buffered log must still arrive.
    run = make_run(max_train_steps=1, batch_size=1)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([PYTHON, "-m", "loradeck.trainer.train.process", str(run)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.rstrip().splitlines()[-1].startswith("run_finished: status=completed")
    assert json.loads((run / "status.json").read_text())["state"] == "completed"

    failing = make_run("failing", max_train_steps=1, base_model="/no/such/model.safetensors")
    failed = subprocess.run([PYTHON, "-m", "loradeck.trainer.train.process", str(failing)], capture_output=True, text=True,
                            env=env, cwd=REPO, timeout=300)
    assert failed.returncode == 1
    assert "error: " in failed.stdout and failed.stdout.rstrip().splitlines()[-1].startswith(
        "run_finished: status=failed")
