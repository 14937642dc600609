"""The run queue: runs that start by themselves, first in first out, when their GPU memory frees.

A queued run has a ticket in the queue folder (`$LORADECK_QUEUE`, else `<root>/.queue`) and a
`queue.json` in its run folder; a *waiter* (`python -m loradeck.trainer.runs.queue_waiter TICKET`, its own
session, so it outlives the TUI and the SSH login) looks every few seconds. Waiters coordinate only
through the folder: under an exclusive lock on `queue.lock`, the oldest ticket of this machine whose
waiter is alive is the head; only the head starts, when `loradeck.trainer.gpu.run_memory.required_bytes` fits the
free memory of its GPU (its `--gpu`, or the one with most free memory). With no GPU (or no NVML),
the head starts when no run the queue started on this machine is still alive: CPU runs never overlap.

Folder layout (docs/shared-gpu.md):

    queue.lock            flock target (any user of the group may lock it)
    waiting/<ns>-<rand>.json   one ticket per queued run; the name sorts in arrival order
    running/<same>.json   the ticket of a run the queue started: pid, GPU, need (its reservation)

Both folders are setgid + sticky + group-writable (3775): everyone of the group may queue, the
group is inherited, and only a file's owner may remove or replace it. Tickets are 0644 and hold
nothing a waiter executes: what to run lives in the run's own folder (queue.json).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from loradeck.trainer import children, process_info
from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import EventWriter, summarize
from loradeck.trainer.gpu import processes as gpu_processes
from loradeck.trainer.gpu import run_memory
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.runs.queue_folder import (  # noqa: F401  (QUEUE_ENV, ensure_dir, queue_dir, queue_line: the queue's public names)
    QUEUE_ENV,
    Ticket,
    describe,
    ensure_dir,
    locked,
    queue_dir,
    queue_line,
    queue_of_host,
    read_json,
    read_queue_record,
    this_host,
    tickets_in,
    waiter_alive,
    write_json,
)

POLL_ENV = "LORADECK_QUEUE_POLL"
POLL_SECONDS = 3.0
BEAT_SECONDS = 10.0     # a waiter rewrites its ticket at least this often (for other hosts' readers)
RESERVE_SECONDS = 600.0  # a started run's reservation lapses at its first step, or after this
WAITER_MODULE = "loradeck.trainer.runs.queue_waiter"


# ------------------------------------------------------------------------------------- queueing

def enqueue(project: Project, files: RunFiles, *, gpu: int | str | None = None, resume: bool = False,
            command: list[str] | None = None) -> dict[str, Any]:
    """Put the (created, not started) run in its root's queue and start its waiter.

    `gpu`: an index, "auto" or None (any GPU). Returns `describe(files)`."""
    cfg, _ = run_config.read_run_config(files.config)
    need = run_memory.required_bytes(cfg)
    qdir = ensure_dir(queue_dir(project.root))
    now = time.time()
    ticket = qdir / "waiting" / f"{time.time_ns():020d}-{secrets.token_hex(4)}.json"
    # What to run stays in the run's own folder: a ticket in a shared folder is never executed.
    record = {"ticket": str(ticket), "queue_dir": str(qdir), "time": now, "gpu": gpu, "need": need,
              "need_source": run_memory.source(), "resume": resume, "gpus": cfg.gpus,
              "command": command or runs.build_command(files.dir, resume=resume, gpus=cfg.gpus,
                                                       mixed_precision=cfg.mixed_precision)}
    atomic_write_text(files.queue, json.dumps(record))
    data = {"run_dir": str(files.dir.absolute()), "project": project.name, "run_id": files.run_id,
            "root": str(project.root), "user": getpass.getuser(), "uid": os.getuid(), "host": this_host(),
            "enqueued": now, "gpu": gpu, "need": need, "beat": now, "waiter": {}}
    with locked(qdir):
        write_json(ticket, data)
    spawn_waiter(files, ticket)
    return describe(files) or {}


def spawn_waiter(files: RunFiles, ticket: Path) -> int:
    """Start a waiter for `ticket` in a new session (it outlives us), logging to the run's train.log."""
    with open(files.log, "ab") as log:
        log.write(f"=== loradeck {time.strftime('%Y-%m-%d %H:%M:%S')}: queued ({ticket.name})\n".encode())
        log.flush()
        proc = children.start(children.module_argv(WAITER_MODULE, str(ticket)), detached=True, stdout=log,
                              stderr=subprocess.STDOUT, cwd=files.dir)
    with locked(ticket.parent.parent):
        _claim(ticket, proc.pid)
    threading.Thread(target=proc.wait, name=f"reap-waiter-{proc.pid}", daemon=True).start()
    return proc.pid


def _claim(ticket: Path, pid: int) -> None:
    """Record `pid` as the ticket's waiter (under the lock)."""
    data = read_json(ticket)
    if data is None:
        return
    data["waiter"] = {"pid": pid, "start": process_info.start_time(pid), "host": this_host()}
    data["beat"] = time.time()
    write_json(ticket, data)


# ------------------------------------------------------------------------------------- starting

def _record_alive(data: dict[str, Any]) -> bool:
    """Is a run the queue started (a running/ ticket) still going? (This machine's only.)"""
    pid = data.get("pid")
    if not isinstance(pid, int) or process_info.running(pid) is False:
        return False
    begun, recorded = process_info.start_time(pid), data.get("pid_start")
    return not (begun and isinstance(recorded, (int, float)) and abs(begun - recorded) > 1.0)


def _reached_peak(data: dict[str, Any]) -> bool:
    if time.time() - float(data.get("started") or 0) > RESERVE_SECONDS:
        return True
    try:
        return "step" in summarize(RunFiles(Path(data["run_dir"])).events)
    except (OSError, KeyError, LoradeckError):
        return False


def _started_here(qdir: Path) -> list[Ticket]:
    """The runs the queue started on this machine that are still alive; dead ones of ours are swept."""
    alive = []
    for t in tickets_in(qdir / "running"):
        if t.data.get("host") != this_host():
            continue
        if _record_alive(t.data):
            alive.append(t)
        elif t.data.get("uid") == os.getuid():
            with contextlib.suppress(OSError):
                t.path.unlink()
    return alive


def _reservations(report: gpu_processes.GpuReport, started: list[Ticket]) -> dict[int, int]:
    """Bytes per GPU promised to started runs still loading: their need less what they hold already."""
    reserved: dict[int, int] = {}
    by_index = {g.index: g for g in report.gpus}
    for t in started:
        if _reached_peak(t.data):
            continue
        group = gpu_processes.run_processes(t.data.get("pid"))
        for index in t.data.get("gpu_indices") or []:
            gpu = by_index.get(index)
            held = sum(p.memory or 0 for p in gpu.processes if p.pid in group) if gpu else 0
            reserved[index] = reserved.get(index, 0) + max(0, int(t.data.get("need") or 0) - held)
    return reserved


def _decide(me: Ticket, started: list[Ticket]) -> tuple[list[gpu_processes.Gpu] | None, bool, str]:
    """(GPUs to use, may start, why not): the head's check against free memory now."""
    report = gpu_processes.snapshot()
    gpu = me.data.get("gpu")
    if not report.gpus:
        if isinstance(gpu, int):
            return None, False, f"GPU {gpu}, but {report.reason}"
        if started:
            return None, False, (f"the CPU: {started[0].run_label} is running (no GPU here, so queued runs"
                                 " start one at a time)")
        return None, True, ""
    count = max(1, int(me.data.get("gpus") or 1))
    chosen, why = gpu_processes.fitting_gpus(report, int(me.data.get("need") or 0), gpu, count,
                                             _reservations(report, started))
    return chosen, chosen is not None, why


def step(ticket: Path) -> str:
    """One look by the waiter of `ticket`: "started" (it launched the run), "waiting", or "gone"
    (cancelled, or another live waiter owns the ticket): everything under the queue lock."""
    qdir = ticket.parent.parent
    with locked(qdir):
        data = read_json(ticket)
        if data is None:
            return "gone"
        me = Ticket(ticket, data)
        waiter = data.get("waiter") or {}
        if waiter.get("pid") != os.getpid() or waiter.get("host") != this_host():
            if waiter_alive(data):
                return "gone"  # requeued: another waiter has it
            _claim(ticket, os.getpid())
            data = me.data = read_json(ticket) or data
        files = RunFiles(Path(data["run_dir"]))
        if read_queue_record(files) is None or runs.run_state(files) != "queued":
            # The run was cancelled, or started or finished by other means: drop the ticket.
            with contextlib.suppress(OSError):
                ticket.unlink()
            return "gone"
        line = queue_of_host(qdir)
        started = _started_here(qdir)
        if line and line[0].path != ticket:
            return _note(me, None)
        chosen, ok, why = _decide(me, started)
        if not ok:
            return _note(me, why)
        pid = _launch(files, chosen)
        data.update(pid=pid, pid_start=process_info.start_time(pid), started=time.time(),
                    gpu_indices=[g.index for g in chosen or []])
        write_json(qdir / "running" / ticket.name, data)
        ticket.unlink()
        return "started"


def _note(me: Ticket, waiting: str | None) -> str:
    """Keep the waiter's beat and, for the head, what it waits for, in its ticket."""
    data = me.data
    if data.get("waiting") != waiting or time.time() - float(data.get("beat") or 0) > BEAT_SECONDS:
        data.update(waiting=waiting, beat=time.time())
        write_json(me.path, data)
    return "waiting"


def _launch(files: RunFiles, chosen: list[gpu_processes.Gpu] | None) -> int:
    record = read_queue_record(files) or {}
    env = gpu_processes.visible_env(chosen)
    with open(files.log, "ab") as log:
        where = ("GPU " + ",".join(f"{g.index} ({g.name})" for g in chosen)) if chosen else "the CPU / default device"
        log.write(f"=== loradeck: queue turn reached; starting on {where}\n".encode())
    with gpu_processes.child_env(env):
        proc = runs.launch(files, resume=bool(record.get("resume")), gpus=record.get("gpus"),
                           command=record.get("command"))
    return proc.pid


# ------------------------------------------------------------------------------- cancel, requeue

def cancel(files: RunFiles) -> dict[str, Any]:
    """Take a queued run out of the queue: its ticket goes, its waiter ends, the run reads `stopped`."""
    if runs.run_state(files) != "queued":
        raise LoradeckError(f"run {files.run_id} is not queued (it is {runs.run_state(files)})")
    record = read_queue_record(files) or {}
    ticket = Path(record.get("ticket") or "")
    waiter_pid = None
    if record.get("ticket"):
        qdir = ticket.parent.parent
        with locked(qdir) if qdir.is_dir() else contextlib.nullcontext():
            if runs.run_state(files) != "queued":  # its waiter started it meanwhile
                raise LoradeckError(f"run {files.run_id} has just started; stop it instead",
                                    hint=command("stop", files.dir.parent.parent.name, files.run_id))
            data = read_json(ticket) or {}
            if waiter_alive(data) and (data.get("waiter") or {}).get("host") == this_host():
                waiter_pid = data["waiter"]["pid"]
            with contextlib.suppress(FileNotFoundError):
                ticket.unlink()
            _finish_cancelled(files)
    else:
        _finish_cancelled(files)
    if waiter_pid:
        with contextlib.suppress(OSError):
            os.kill(waiter_pid, signal.SIGTERM)
    return {"ok": True, "run_id": files.run_id, "state": runs.run_state(files), "cancelled": True}


def _finish_cancelled(files: RunFiles) -> None:
    writer = EventWriter(files.events)
    try:
        writer.emit("run_finished", status="stopped", steps_done=0, message="cancelled while queued")
    finally:
        writer.close()


def requeue(files: RunFiles) -> dict[str, Any]:
    """Give an orphaned queued run (its waiter was killed) a new waiter; it keeps its place when its
    ticket is still there, else it joins the end of the queue."""
    info = describe(files)
    if runs.run_state(files) != "queued" or info is None:
        raise LoradeckError(f"run {files.run_id} is not queued (it is {runs.run_state(files)})",
                            hint="a stopped, failed or crashed run is continued with: loradeck resume")
    if not info["orphaned"]:
        raise LoradeckError(f"run {files.run_id} is queued and its waiter is alive: nothing to requeue")
    record = read_queue_record(files) or {}
    ticket = Path(info["ticket"])
    if read_json(ticket) is None:
        project = Project(root=files.dir.parent.parent.parent, name=files.dir.parent.parent.name)
        return enqueue(project, files, gpu=record.get("gpu"), resume=bool(record.get("resume")),
                       command=record.get("command"))
    spawn_waiter(files, ticket)
    return describe(files) or {}
