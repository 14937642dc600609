"""The run queue on a shared box: queued runs start by themselves when the scripted NVML's free
memory fits, first in first out across projects, one at a time without a GPU; cancel; a waiter
killed with -9; two users sharing one queue folder. Waiters are real detached processes that read
the fake NVML from a file (tests/runs/fake_nvml), trainers are tests.fake_trainer."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from loradeck.trainer.dataset.project import create_project
from loradeck.trainer.events import read_all
from loradeck.trainer.gpu import processes as gpu_processes
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs import queue as run_queue
from loradeck.trainer.runs.files import RunFiles
from tests.runs.conftest import write_images
from tests.runs.queue_helpers import FAKE_NVML_DIR, GiB, ScriptedNvml, call, call_json, load_fake_pynvml
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--resolution", "64", "--steps", "6"]


@pytest.fixture
def gpus(tmp_path, monkeypatch, fake_trainer):
    """A scripted NVML seen by this process and by every waiter it starts; the queue folder in tmp."""
    script = ScriptedNvml(tmp_path / "nvml.json")
    script.save()
    monkeypatch.setenv("FAKE_NVML_FILE", str(script.path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE_NVML_DIR), str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv(run_queue.POLL_ENV, "0.2")
    monkeypatch.setenv(run_queue.QUEUE_ENV, str(tmp_path / "queue"))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", load_fake_pynvml())
    yield script
    for proc in psutil.process_iter(["cmdline"]):  # waiters and trainers this test left behind
        if any(str(tmp_path) in part for part in proc.info["cmdline"] or []):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def second(root):
    proj = create_project("other", root, trigger_word="sks", base_model="synthetic:tiny")
    write_images(proj.dataset)
    return proj


def queue(capsys, name: str, *extra: str) -> RunFiles:
    data = call_json(capsys, "train", name, *SMALL, "--queue", *extra)
    assert data["_code"] == 0, data
    assert data["state"] == "queued"
    return RunFiles(Path(data["run_dir"]))


def state(files: RunFiles) -> str:
    return runs.run_state(files)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def first_time(files: RunFiles, type_: str) -> float:
    return next(e["time"] for e in read_all(files.events) if e["type"] == type_)


def test_a_queued_run_waits_for_gpu_memory_and_starts_when_it_frees(project, gpus, capsys):
    gpus.gpu(total=24 * GiB, used=24 * GiB - 256 * 1024 ** 2, uuid="GPU-full-one")  # less free than it needs
    files = queue(capsys, "toy")
    info = runs.run_info(files)
    assert info.state == "queued" and info.queue["place"] == 1
    wait_until(lambda: "free now" in (run_queue.describe(files)["waits_for"] or ""), 90, message="the head's reason")
    code, out, _ = call(capsys, "runs", "toy")
    assert "queued 1/1: waits for" in out and "GiB free on a GPU" in out
    assert state(files) == "queued"  # still: 256 MiB free is less than it needs
    gpus.set_used(0, 2 * GiB)
    wait_until(lambda: state(files) == "completed", 30, message="the run to start and finish")
    log = files.log.read_text()
    assert "CUDA_VISIBLE_DEVICES=GPU-full-one" in log  # the child got the GPU it was placed on
    assert not list((Path(os.environ[run_queue.QUEUE_ENV]) / "waiting").iterdir())


def test_queued_runs_of_two_projects_start_first_in_first_out(project, second, gpus, capsys):
    """Strict order: the run behind waits for the head even when its own GPU is free."""
    gpus.gpu(total=24 * GiB, used=24 * GiB)
    gpus.gpu(total=24 * GiB, used=0)
    first = queue(capsys, "toy", "--gpu", "0")
    later = queue(capsys, "other", "--gpu", "1")
    assert run_queue.describe(later)["place"] == 2
    assert "1 queued run(s) ahead; first: toy/" in runs.run_info(later).message
    wait_until(lambda: "free now" in (run_queue.describe(first)["waits_for"] or ""), 90, message="the head's look")
    time.sleep(1.0)  # several looks of both waiters
    assert (state(first), state(later)) == ("queued", "queued")
    gpus.set_used(0, 0)
    wait_until(lambda: state(first) == "completed" and state(later) == "completed", 40, message="both runs")
    assert first_time(later, "run_started") > first_time(first, "run_started")


def test_a_just_started_run_reserves_its_need_until_its_first_step(project, gpus, capsys, tmp_path):
    """The queue's own launches hold their estimate on their GPU while loading (NVML does not show
    their memory yet), so the next run does not start into it; at its first step the hold ends."""
    gpus.gpu(total=24 * GiB, used=20 * GiB, compute=[])
    sleeper = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        run_dir = tmp_path / "started-run"
        run_dir.mkdir()
        started = run_queue.Ticket(tmp_path / "r.json", {"pid": sleeper.pid, "gpu_indices": [0], "need": 3 * GiB,
                                                         "started": time.time(), "run_dir": str(run_dir)})
        report = gpu_processes.snapshot()
        assert run_queue._reservations(report, [started]) == {0: 3 * GiB}
        chosen, why = gpu_processes.fitting_gpus(report, 2 * GiB, "auto", 1, run_queue._reservations(report, [started]))
        assert chosen is None and "1.0 GiB" in why  # 4 GiB free less the 3 GiB held
        gpus.data["devices"][0]["compute"] = [[sleeper.pid, 1 * GiB]]  # it has taken 1 GiB so far
        gpus.save()
        assert run_queue._reservations(gpu_processes.snapshot(), [started]) == {0: 2 * GiB}
        (run_dir / "events.jsonl").write_text(json.dumps({"type": "step", "time": time.time(), "step": 1}) + "\n")
        assert run_queue._reservations(gpu_processes.snapshot(), [started]) == {}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_without_a_gpu_queued_runs_start_one_at_a_time_in_order(project, second, gpus, capsys, monkeypatch):
    gpus.no_nvml("Driver Not Loaded")
    # Slow steps: queueing computes the run's estimate (seconds), the first must still run meanwhile.
    monkeypatch.setenv("FAKE_STEP_SECONDS", "4")
    first, later = queue(capsys, "toy"), queue(capsys, "other")
    wait_until(lambda: state(first) == "running", 90, message="the first CPU run")
    wait_until(lambda: "the CPU" in (run_queue.describe(later)["waits_for"] or ""), 90, message="the CPU reason")
    wait_until(lambda: state(later) == "completed", 150, message="the second CPU run")
    assert first_time(later, "run_started") >= [e for e in read_all(first.events)
                                                if e["type"] == "run_finished"][-1]["time"]


def test_cancel_takes_a_queued_run_out_and_its_waiter_ends(project, gpus, capsys):
    gpus.gpu(total=24 * GiB, used=24 * GiB)
    files = queue(capsys, "toy")
    record = run_queue.read_queue_record(files)
    waiter = wait_until(lambda: (json.loads(Path(record["ticket"]).read_text()).get("waiter") or {}).get("pid"), 5)
    code, out, _ = call(capsys, "cancel", "toy", files.run_id)
    assert code == 0 and "cancelled" in out
    assert state(files) == "stopped" and not Path(record["ticket"]).exists()
    wait_until(lambda: gone(waiter), 10, message="the waiter to exit")
    gpus.set_used(0, 0)
    assert state(files) == "stopped"
    # `stop` on a queued run cancels it too
    other = queue(capsys, "toy")
    code, out, _ = call(capsys, "stop", "toy", other.run_id)
    assert code == 0 and state(other) == "stopped"


def test_a_waiter_killed_with_sigkill_leaves_an_orphan_that_one_command_requeues(project, second, gpus, capsys):
    gpus.gpu(total=24 * GiB, used=24 * GiB)
    orphan = queue(capsys, "toy")
    ticket = Path(run_queue.read_queue_record(orphan)["ticket"])
    pid = wait_until(lambda: (json.loads(ticket.read_text()).get("waiter") or {}).get("pid"), 5)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: run_queue.describe(orphan)["orphaned"], 10, message="the orphan to show")
    info = runs.run_info(orphan)
    assert info.state == "queued" and "orphaned" in info.message and "loradeck requeue toy" in info.message
    # An orphan holds no place: the run queued after it starts when memory frees.
    behind = queue(capsys, "other")
    assert run_queue.describe(behind)["place"] == 1
    gpus.set_used(0, 0)
    wait_until(lambda: state(behind) == "completed", 30, message="the run behind the orphan")
    assert state(orphan) == "queued"
    code, out, _ = call(capsys, "resume", "toy", orphan.run_id)  # resume of an orphan requeues it
    assert code == 0 and "queued run" in out
    wait_until(lambda: state(orphan) == "completed", 30, message="the requeued run")


def test_two_users_share_one_queue_folder_in_order_and_cannot_remove_each_others_tickets(
        project, gpus, capsys, monkeypatch):
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to act as a second user")
    shared = Path(tempfile.mkdtemp(prefix="loradeck-queue-"))
    try:
        os.chmod(shared, 0o755)
        qdir = shared / "queue"
        monkeypatch.setenv(run_queue.QUEUE_ENV, str(qdir))
        run_queue.ensure_dir(qdir)
        for d in (qdir, qdir / "waiting", qdir / "running"):
            os.chown(d, 0, 65534)  # the users' shared group
            mode = stat.S_IMODE(d.stat().st_mode)
            assert mode == 0o3775, oct(mode)  # setgid, sticky, group-writable
        # The other user (nobody, in group nogroup) queues first: a ticket whose waiter is its process.
        other = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
             "import os, sys, time, json; sys.path.insert(0, sys.argv[1]);"
             "from loradeck.trainer.runs import queue_folder as q; from pathlib import Path;"
             "t = Path(sys.argv[2]) / 'waiting' / f'{time.time_ns():020d}-other.json';"
             "q.write_json(t, {'run_dir': '/nonexistent', 'project': 'theirs', 'run_id': 'r1', 'user': 'nobody',"
             " 'uid': os.getuid(), 'host': q.this_host(), 'enqueued': time.time(), 'gpu': None, 'need': 1,"
             " 'waiter': {'pid': os.getpid(), 'start': q.process_info.start_time(os.getpid()), 'host': q.this_host()},"
             " 'beat': time.time()}); print(t, flush=True); time.sleep(60)",
             str(REPO), str(qdir)], stdout=subprocess.PIPE, text=True, cwd="/")
        try:
            theirs = Path(other.stdout.readline().strip())
            assert theirs.is_file() and theirs.stat().st_uid == 65534 and theirs.stat().st_gid == 65534
            assert stat.S_IMODE(theirs.stat().st_mode) == 0o644
            gpus.gpu(total=24 * GiB, used=0)
            mine = queue(capsys, "toy")
            ticket = Path(run_queue.read_queue_record(mine)["ticket"])
            assert stat.S_IMODE(ticket.stat().st_mode) == 0o644 and ticket.stat().st_gid == 65534
            # FIFO across users: theirs is older, so mine waits behind it although the GPU is free.
            wait_until(lambda: run_queue.describe(mine)["place"] == 2, 5)
            assert "theirs/r1 (nobody)" in run_queue.describe(mine)["waits_for"]
            assert state(mine) == "queued"
            # The sticky folder: the other user cannot remove my ticket.
            rm = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                 sys.executable, "-c", "import os, sys; os.unlink(sys.argv[1])", str(ticket)],
                                capture_output=True, text=True, cwd="/")
            assert rm.returncode != 0 and "PermissionError" in rm.stderr and ticket.exists()
            other.kill()  # their waiter gone: their ticket is an orphan and holds no place
            other.wait()
            wait_until(lambda: state(mine) == "completed", 30, message="my run after theirs left")
        finally:
            other.kill()
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.slow
def test_two_real_cpu_runs_queued_from_two_projects_finish_one_after_the_other(project, second, cli, root,
                                                                               tmp_path):
    """The real trainer on synthetic:tiny, queued through the CLI on a box whose NVML says no GPU:
    the second run starts only after the first has finished, and both complete."""
    script = ScriptedNvml(tmp_path / "nvml.json").no_nvml("NVML Shared Library Not Found")
    env = {"FAKE_NVML_FILE": str(script.path), run_queue.POLL_ENV: "0.3",
           run_queue.QUEUE_ENV: str(tmp_path / "queue"),
           "PYTHONPATH": os.pathsep.join([str(FAKE_NVML_DIR), str(REPO), os.environ.get("PYTHONPATH", "")])}
    tiny = ["--base-model", "synthetic:tiny", "--resolution", "64", "--mixed-precision", "no", "--steps", "3"]
    try:
        queued = [json.loads(cli("train", name, *tiny, "--queue", "--json", root=root, env=env, check=True).stdout)
                  for name in ("toy", "other")]
        first, later = (RunFiles(Path(q["run_dir"])) for q in queued)
        assert [q["state"] for q in queued] == ["queued", "queued"]
        wait_until(lambda: runs.run_state(later) in runs.FINISHED + ("crashed",), 400, interval=0.5,
                   message="both real runs")
        assert (runs.run_state(first), runs.run_state(later)) == ("completed", "completed")
        finished_first = [e for e in read_all(first.events) if e["type"] == "run_finished"][-1]["time"]
        assert first_time(later, "run_started") > finished_first
        assert runs.run_info(later).output and Path(runs.run_info(later).output).stat().st_size > 0
    finally:
        for proc in psutil.process_iter(["cmdline"]):
            if any(str(tmp_path) in part for part in proc.info["cmdline"] or []):
                with __import__("contextlib").suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)


def test_resume_queue_continues_a_stopped_run_when_memory_frees(project, gpus, capsys, monkeypatch):
    gpus.gpu(total=24 * GiB, used=0)
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.2")
    data = call_json(capsys, "train", "toy", "--resolution", "64", "--steps", "40", "--detach")
    files = RunFiles(Path(data["run_dir"]))
    wait_until(lambda: runs.run_info(files).step >= 2, 20, message="a few steps")
    assert call(capsys, "stop", "toy", files.run_id)[0] == 0
    stopped_at = runs.run_info(files).step
    assert runs.run_state(files) == "stopped" and stopped_at < 40
    gpus.set_used(0, 24 * GiB)
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.02")
    resumed = call_json(capsys, "resume", "toy", files.run_id, "--queue")
    assert resumed["_code"] == 0 and resumed["state"] == "queued" and state(files) == "queued"
    gpus.set_used(0, 0)
    wait_until(lambda: state(files) == "completed", 30, message="the resumed run")
    starts = [e for e in read_all(files.events) if e["type"] == "run_started"]
    assert len(starts) == 2 and starts[1]["resumed_from"] == stopped_at and runs.run_info(files).step == 40
