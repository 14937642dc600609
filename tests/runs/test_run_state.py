"""How a run's state is read from its files: finished events, live process, heartbeat, pid reuse."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from loradeck.trainer.events import EventWriter
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.files import write_status
from tests.fake_trainer import lookalike_trainer
from tests.waiting import wait_until


@pytest.fixture
def run(project):
    return runs.create_run(project, {"max_train_steps": 4, "resolution": 64})


def emit(files, type_, **fields):
    writer = EventWriter(files.events)
    writer.emit(type_, **fields)
    writer.close()


def started(files):
    emit(files, "run_started", run_id=files.run_id, config={}, environment={})


def trainer_like_process(files, reap):
    """A live process whose command line looks like this run's trainer (what pid checks look for)."""
    proc = lookalike_trainer(files.dir, module=runs.TRAIN_MODULE, start_new_session=True)
    reap(proc.pid)
    return proc


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("status", ["completed", "stopped", "failed"])
def test_run_finished_decides_a_finished_run(run, status):
    started(run)
    emit(run, "run_finished", status=status)
    assert runs.run_state(run) == status


def test_running_while_the_process_lives_and_beats(run, reap):
    proc = trainer_like_process(run, reap)
    started(run)
    write_status(run, pid=proc.pid, state="running")
    assert runs.run_state(run) == "running"


def test_crashed_when_the_pid_is_dead(run):
    started(run)
    write_status(run, pid=dead_pid(), state="running")
    assert runs.run_state(run) == "crashed"


def test_crashed_when_the_heartbeat_is_stale_even_if_the_pid_lives(run, reap):
    proc = trainer_like_process(run, reap)
    started(run)
    write_status(run, pid=proc.pid, state="running", heartbeat=time.time() - runs.STALE_SECONDS - 5)
    assert runs.run_state(run) == "crashed"


def test_a_reused_pid_is_not_mistaken_for_the_trainer(run, reap):
    # A live process that is not this run's trainer (wrong command line) holds the pid.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    reap(other.pid)
    started(run)
    write_status(run, pid=other.pid, state="running")
    assert runs.run_state(run) == "crashed"
    # A trainer-like process that started after the last heartbeat cannot have written it.
    proc = trainer_like_process(run, reap)
    time.sleep(0.05)
    write_status(run, pid=proc.pid, state="running", heartbeat=time.time() - 3)
    assert runs.process_alive(proc.pid)
    assert runs.run_state(run) == "crashed"


def test_starting_after_launch_until_run_started(run, reap):
    proc = trainer_like_process(run, reap)
    (run.dir / "launch.json").write_text(
        f'{{"pid": {proc.pid}, "pgid": {proc.pid}, "time": {time.time()}, '
        f'"proc_start": {runs._proc_start(proc.pid)}}}')
    assert runs.run_state(run) == "starting"
    started(run)
    write_status(run, pid=proc.pid, state="running")
    assert runs.run_state(run) == "running"


def test_a_resumed_run_is_not_read_as_its_previous_stop(run, reap):
    started(run)
    emit(run, "run_finished", status="stopped")
    assert runs.run_state(run) == "stopped"
    time.sleep(0.01)
    proc = trainer_like_process(run, reap)  # the resumed trainer, still loading
    (run.dir / "launch.json").write_text(
        f'{{"pid": {proc.pid}, "pgid": {proc.pid}, "time": {time.time()}, '
        f'"proc_start": {runs._proc_start(proc.pid)}}}')
    assert runs.run_state(run) == "starting"
    proc.kill()
    proc.wait()
    assert runs.run_state(run) == "crashed"  # died while loading, without a word


def test_zombie_is_dead(run):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_until(lambda: Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z", 30,
               message="the child to exit, not yet reaped (a zombie)")
    assert not runs.process_alive(proc.pid)
    proc.wait()


def test_list_runs_summarises_each_run(project, run):
    started(run)
    emit(run, "step", step=3, total_steps=4, epoch=1, loss=0.25, lr=1e-4)
    out = run.output("lora")
    out.write_bytes(b"x")
    emit(run, "run_finished", status="completed", output=str(out))
    [info] = runs.list_runs(project)
    assert (info.run_id, info.state, info.step, info.total_steps, info.loss) == (run.run_id, "completed", 3, 4, 0.25)
    assert info.output == str(out) and info.base_model == "synthetic:tiny" and info.started and info.finished
    data = info.to_dict()
    assert data["dir"] == str(run.dir) and "files" not in data


def test_event_summary_reads_only_what_was_appended(run, monkeypatch):
    writer = EventWriter(run.events)
    writer.emit("run_started", run_id="first", config={}, environment={})
    for i in range(2000):
        writer.emit("gpu", available=True, index=0, mem_used=i)
    writer.emit("step", step=7, total_steps=9, epoch=1, loss=0.5, lr=1e-4)
    writer.close()
    summary = runs.event_summary(run.events)
    assert summary["step"]["step"] == 7 and summary["run_started"]["run_id"] == "first"
    assert "run_finished" not in summary
    size = run.events.stat().st_size
    # Appending: only the new bytes are read, and a half-written line waits for its newline.
    reads = []
    monkeypatch.setattr(runs._EventSummary, "feed", lambda self, data, _f=runs._EventSummary.feed:
                        (reads.append(len(data)), _f(self, data)))
    with open(run.events, "a") as fh:
        fh.write('{"type": "step", "time": 1, "step": 8, "total_steps": 9, "epoch": 1, "loss": 0.4, "lr": 1}\n')
        fh.write('{"type": "run_started", "time": 2, "run_id": "sec')
    summary = runs.event_summary(run.events)
    assert summary["step"]["step"] == 8 and summary["run_started"]["run_id"] == "first"
    assert sum(reads) == run.events.stat().st_size - size
    with open(run.events, "a") as fh:
        fh.write('ond", "config": {}, "environment": {}}\n')
    summary = runs.event_summary(run.events)
    assert summary["run_started"]["run_id"] == "second" and summary["first_run_started"]["run_id"] == "first"
    # A replaced (shorter) file is read afresh.
    run.events.write_text('{"type": "run_finished", "time": 3, "status": "failed"}\n')
    assert runs.event_summary(run.events) == {"run_finished": {"type": "run_finished", "time": 3, "status": "failed"}}


def test_a_hung_trainer_reads_crashed_but_blocks_resume_until_stopped(run, reap, monkeypatch):
    from loradeck.trainer.errors import LoradeckError

    monkeypatch.setattr(runs, "STALE_SECONDS", 0.5)
    # Alive, but silent for longer than STALE_SECONDS (deadlocked, say).
    proc = lookalike_trainer(run.dir, ignore_sigterm=True, module=runs.TRAIN_MODULE, start_new_session=True)
    reap(proc.pid)
    started(run)
    # Its last heartbeat, written once it runs (a heartbeat older than the process is not its own)...
    wait_until(lambda: str(run.dir).encode() in Path(f"/proc/{proc.pid}/cmdline").read_bytes(), 10, interval=0.01,
               message="the process to exec")
    time.sleep(0.05)  # the heartbeat's clock reading must come after the process's start (1/100 s ticks)
    write_status(run, pid=proc.pid, state="running")
    assert runs.run_state(run) == "running"
    # ...goes stale after STALE_SECONDS of silence.
    wait_until(lambda: runs.run_state(run) == "crashed", 10, message="the silent trainer to read crashed")
    assert runs.lingering_pid(run) == proc.pid
    with pytest.raises(LoradeckError, match=f"pid {proc.pid}.* still alive"):
        runs.resume(run)
    report = runs.stop(run, timeout=0.5)  # it ignores SIGTERM: still there
    assert not report["ok"] and runs.lingering_pid(run) == proc.pid
    report = runs.stop(run, timeout=0.5, force=True)
    proc.wait(timeout=5)
    assert report["ok"] and report["forced"] and runs.run_state(run) == "crashed"
    assert runs.lingering_pid(run) is None
