"""Runs as Slurm batch jobs: submit, read the job's state, cancel, resubmit.

loradeck schedules nothing itself on a cluster: the run folder stays the contract between whoever
launches and the trainer, and Slurm owns the GPUs. `loradeck train --slurm` writes
`runs/<id>/slurm.sbatch` (a plain script the user can read and re-submit by hand) and submits it with
`sbatch`; the job runs `python -m loradeck.trainer.slurm.job RUN_DIR`, which starts the trainer exactly as a
local launch does (one process, or `accelerate launch` for several GPUs on the node).

Why plain sbatch and not a client library such as submitit: the job must be readable and
re-submittable by people who know Slurm and not Python, its time-limit handling must go through the
trainer's own stop/resume (state saved at a step boundary, then resumed exactly), and the login node
must learn the job's state from the run folder and `squeue`/`scontrol` alone, from any machine that
sees the shared folder. submitit pickles a Python callable into its own folder layout and does its
own requeueing, which would be a second source of truth next to the run folder.

`slurm.json` in the run folder records the job chain: every job id submitted for the run, where
each ran, how many time-limit resubmissions happened, and whether a stop was asked for. Reading a
run's state (loradeck.trainer.runs.lifecycle.run_state) asks Slurm about the newest job only while the files cannot
tell; answers are cached for a few seconds so a TUI polling many runs does not flood the controller.
Accounting (`sacct`) is used only where it answers: many small clusters run without slurmdbd.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.config.slurm_settings import SlurmSettings, merge
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs.files import RunFiles

JOB_MODULE = "loradeck.trainer.slurm.job"
# Slurm job states (squeue %T / scontrol JobState) grouped by what they mean for a run.
WAITING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED", "CONFIGURING"}
RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING", "STOPPED"}
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
         "BOOT_FAIL", "DEADLINE", "SPECIAL_EXIT", "REVOKED"}
QUERY_TTL = 3.0
COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True)
class JobInfo:
    """What Slurm says of one job right now."""

    job_id: str
    state: str          # e.g. PENDING, RUNNING, TIMEOUT
    reason: str         # e.g. Resources, Priority, None
    node: str           # NodeList, "" while pending


# ----------------------------------------------------------------------------------- the record file

def record_path(files: RunFiles) -> Path:
    return files.slurm_record


def script_path(files: RunFiles) -> Path:
    return files.slurm_script


def read_record(files: RunFiles) -> dict[str, Any] | None:
    """The run's slurm.json, or None for a run that was never submitted to Slurm."""
    try:
        data = json.loads(record_path(files).read_text())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("jobs"), list) else None


@contextlib.contextmanager
def _locked_record(files: RunFiles) -> Iterator[dict[str, Any]]:
    """Read-modify-write slurm.json under a lock (the login node and the job both update it)."""
    with open(files.slurm_lock, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            record = read_record(files) or {"jobs": [], "resubmits": 0}
            yield record
            atomic_write_text(record_path(files), json.dumps(record, indent=1))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def latest_job(record: dict[str, Any] | None) -> dict[str, Any] | None:
    jobs = (record or {}).get("jobs") or []
    return jobs[-1] if jobs and isinstance(jobs[-1], dict) else None


# ------------------------------------------------------------------------------------- submitting

def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise LoradeckError(f"{tool} is not installed or not on PATH, so runs cannot be sent to Slurm",
                            hint="run loradeck on a Slurm login node (slurm-client installed), or train without --slurm")
    return path


def script_text(files: RunFiles, settings: SlurmSettings, *, gpus: int, label: str) -> str:
    """The batch script for a run: #SBATCH options from the settings, then the job wrapper."""
    python = settings.python or sys.executable
    n_gpus = max(gpus, settings.gpus) if settings.gpus > 0 or gpus > 1 else 0
    gres = settings.gres or (f"gpu:{n_gpus}" if n_gpus > 0 else "")
    lines = ["#!/bin/bash",
             f"# {label}: written by loradeck (docs/cluster.md). Submitted with sbatch from the run folder;",
             "# the job starts the trainer on this run folder and resumes from its saved state when there is one.",
             "#SBATCH --nodes=1",
             "#SBATCH --ntasks=1",
             f"#SBATCH --cpus-per-task={settings.cpus}",
             "#SBATCH --requeue",  # preemption or node failure: Slurm restarts the job, which resumes
             "#SBATCH --open-mode=append"]
    if settings.time_limit:
        lines.append(f"#SBATCH --time={settings.time_limit}")
    # USR1 to the batch shell (the wrapper) this long before the limit: save state, resubmit, exit.
    lines.append(f"#SBATCH --signal=B:USR1@{settings.signal_seconds}")
    for flag, value in (("partition", settings.partition), ("account", settings.account),
                        ("qos", settings.qos), ("mem", settings.mem), ("gres", gres)):
        if value:
            lines.append(f"#SBATCH --{flag}={value}")
    lines += [f"#SBATCH {option}" for option in settings.extra]
    lines.append("")
    lines += settings.setup
    env = {"PYTHONUNBUFFERED": "1"}
    lines += [f"export {k}={v}" for k, v in env.items()]
    lines.append(f"cd {shlex.quote(str(files.dir))}")
    # exec: the wrapper is the batch shell, so Slurm's B: signal reaches it.
    lines.append(f"exec {shlex.quote(python)} -m {JOB_MODULE} {shlex.quote(str(files.dir))}")
    return "\n".join(lines) + "\n"


def submit(files: RunFiles, settings: SlurmSettings, *, gpus: int, label: str, reason: str) -> str:
    """Write the batch script (first time) and sbatch it; returns the new job id.

    `reason` is recorded with the job: "submit", "resume" or "time_limit".
    """
    sbatch = _require("sbatch")
    files = RunFiles(files.dir.resolve())  # the job starts elsewhere: every path it gets is absolute
    script = script_path(files)
    if not script.is_file() or reason == "submit":
        atomic_write_text(script, script_text(files, settings, gpus=gpus, label=label))
        os.chmod(script, 0o755)
    job_name = label.replace(" ", "_")[:120]
    command = [sbatch, "--parsable", f"--job-name={job_name}", f"--chdir={files.dir}",
               f"--output={files.slurm_output}", str(script)]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LoradeckError("sbatch did not answer within 30 s (is slurmctld up?)") from None
    if proc.returncode != 0:
        message = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise LoradeckError(f"sbatch refused the job: {message[-1] if message else 'exit ' + str(proc.returncode)}",
                            hint=f"check the [slurm] settings; the script is {script}")
    job_id = proc.stdout.strip().split(";")[0]
    if not job_id.isdigit():
        raise LoradeckError(f"sbatch answered {proc.stdout.strip()!r}, not a job id")
    with _locked_record(files) as record:
        record.setdefault("settings", {k: getattr(settings, k) for k in settings.__dataclass_fields__})
        record["max_resubmits"] = settings.max_resubmits
        record["jobs"].append({"id": job_id, "submitted": time.time(), "reason": reason})
        if reason == "time_limit":
            record["resubmits"] = int(record.get("resubmits") or 0) + 1
        if reason in ("submit", "resume"):
            record.pop("stop_requested", None)
    _forget(job_id)
    return job_id


def settings_of(record: dict[str, Any] | None) -> SlurmSettings:
    """The settings a run was first submitted with (resubmissions reuse them)."""
    stored = (record or {}).get("settings") or {}
    return merge({k: v for k, v in stored.items() if k in SlurmSettings.__dataclass_fields__})


def note_job_started(files: RunFiles, job_id: str, node: str) -> None:
    """The wrapper, first thing in the job: where it runs (for `running on node X`)."""
    with _locked_record(files) as record:
        for job in record["jobs"]:
            if job.get("id") == job_id:
                job["node"], job["started"] = node, time.time()
                break
        else:  # submitted by hand (sbatch slurm.sbatch): adopt it
            record["jobs"].append({"id": job_id, "submitted": time.time(), "reason": "manual",
                                   "node": node, "started": time.time()})


def request_stop(files: RunFiles) -> None:
    with _locked_record(files) as record:
        record["stop_requested"] = time.time()


# ---------------------------------------------------------------------------------------- querying

_cache: dict[str, tuple[float, JobInfo | None]] = {}
_cache_lock = threading.Lock()


def _forget(job_id: str) -> None:
    with _cache_lock:
        _cache.pop(job_id, None)


def _run(command: list[str]) -> str | None:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _from_squeue(job_id: str) -> JobInfo | None:
    out = _run(["squeue", "--noheader", "--states=all", "--jobs", job_id, "--format=%i|%T|%r|%N"])
    for line in (out or "").splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4 and parts[0] == job_id:
            return JobInfo(job_id, parts[1].upper(), parts[2], parts[3])
    return None


def _from_scontrol(job_id: str) -> JobInfo | None:
    out = _run(["scontrol", "--oneliner", "show", "job", job_id])
    if not out:
        return None
    values = dict(item.split("=", 1) for item in out.split() if "=" in item)
    state = values.get("JobState", "").upper()
    if not state:
        return None
    node = values.get("NodeList", "")
    return JobInfo(job_id, state, values.get("Reason", ""), "" if node == "(null)" else node)


def _from_sacct(job_id: str) -> JobInfo | None:
    if shutil.which("sacct") is None:
        return None
    out = _run(["sacct", "--noheader", "--parsable2", "--jobs", job_id, "--format=JobID,State,NodeList"])
    for line in (out or "").splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0] == job_id:
            state = parts[1].split()[0].upper()  # "CANCELLED by 0"
            return JobInfo(job_id, state, "", parts[2])
    return None


def query(job_id: str) -> JobInfo | None:
    """Slurm's view of a job (squeue, then scontrol, then sacct where accounting answers); None when
    no tool knows it any more."""
    now = time.monotonic()
    with _cache_lock:
        hit = _cache.get(job_id)
        if hit and now - hit[0] < QUERY_TTL:
            return hit[1]
    info = _from_squeue(job_id) or _from_scontrol(job_id) or _from_sacct(job_id)
    with _cache_lock:
        _cache[job_id] = (now, info)
    return info


# ------------------------------------------------------------------------------- the run's state

def view(files: RunFiles, file_state: str, finished_time: float | None,
         active: tuple[str, ...]) -> tuple[str, str | None] | None:
    """(state, detail) of a Slurm run, or None for a run that was not submitted to Slurm.

    `file_state` is what the run folder alone says; `finished_time` the newest run_finished's time.
    The newest job decides while the trainer has not finished under it: pending reads `queued`,
    running reads the files' state (a trainer not yet up is `starting`), and a job that ended
    without the trainer finishing reads `failed` with Slurm's reason (OUT_OF_MEMORY, TIMEOUT, ...).
    """
    record = read_record(files)
    job = latest_job(record)
    if job is None:
        return None
    job_id = str(job.get("id"))
    submitted = float(job.get("submitted") or 0)
    if finished_time is not None and finished_time >= submitted:
        where = f"Slurm job {job_id}" + (f" on {job['node']}" if job.get("node") else "")
        if file_state == "stopped" and not record.get("stop_requested"):
            # Nobody asked it to stop: Slurm ended the job (scancel, a kill) and the trainer saved on
            # its way out. That is a failure of the job, with Slurm's word for it; resume continues.
            info = query(job_id)
            if info is not None and info.state in ENDED and info.state != "COMPLETED":
                reason = f" ({info.reason})" if info.reason and info.reason not in ("None", info.state) else ""
                return "failed", f"Slurm: {info.state}{reason}, job {job_id} (state saved: resume continues)"
            if info is not None and info.state in RUNNING:
                # Slurm is still ending the job (or the job resubmits itself at its time limit): until
                # Slurm says how it ended, the run is on its way out, not yet stopped or failed.
                return "stopping", f"Slurm job {job_id} is ending ({info.state})"
        return file_state, where
    info = query(job_id)
    if info is None:
        # Slurm has forgotten the job (no accounting): the files are all there is.
        return file_state, f"Slurm job {job_id} (no longer known to Slurm)"
    if info.state in WAITING:
        reason = info.reason if info.reason and info.reason != "None" else "waiting"
        return "queued", f"Slurm job {job_id}, {info.state}: {reason}"
    if info.state in RUNNING:
        node = info.node or job.get("node") or "?"
        state = file_state if file_state in active else "starting"
        return state, f"running on node {node} (Slurm job {job_id})"
    reason = f" ({info.reason})" if info.reason and info.reason not in ("None", info.state) else ""
    if file_state == "running":
        return file_state, f"Slurm job {job_id} {info.state}"  # the heartbeat has not gone stale yet
    return "failed", f"Slurm: {info.state}{reason}, job {job_id}"


# ------------------------------------------------------------------------------- stopping, resuming

def _scancel(args: list[str]) -> tuple[bool, str]:
    scancel = _require("scancel")
    try:
        proc = subprocess.run([scancel, *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, "scancel did not answer within 30 s"
    return proc.returncode == 0, (proc.stderr.strip() or proc.stdout.strip())


def cancel(files: RunFiles) -> str:
    """Ask the run's job to stop: a pending job is cancelled (nothing ran), a running one gets
    SIGTERM in its batch shell and trainer (`scancel --signal=TERM --full`), so the step finishes
    and state is saved before the job ends. Returns what was done: "cancelled" or "signalled"."""
    record = read_record(files)
    job = latest_job(record)
    if job is None:
        raise LoradeckError(f"run {files.run_id} was not submitted to Slurm")
    job_id = str(job["id"])
    request_stop(files)
    _forget(job_id)
    info = query(job_id)
    if info is not None and info.state in WAITING:
        ok, message = _scancel([job_id])
        if not ok:
            raise LoradeckError(f"scancel {job_id} failed: {message}")
        _forget(job_id)
        return "cancelled"
    if info is None or info.state in ENDED:
        raise LoradeckError(f"run {files.run_id}'s Slurm job {job_id} is not running"
                            f" ({info.state if info else 'unknown to Slurm'})")
    ok, message = _scancel(["--signal=TERM", "--full", job_id])
    if not ok:
        raise LoradeckError(f"scancel --signal=TERM {job_id} failed: {message}")
    _forget(job_id)
    return "signalled"


def kill(files: RunFiles) -> None:
    """Cancel the run's job outright (SIGKILL after Slurm's KillWait): the last saved state remains."""
    job = latest_job(read_record(files))
    if job is None:
        raise LoradeckError(f"run {files.run_id} was not submitted to Slurm")
    ok, message = _scancel([str(job["id"])])
    _forget(str(job["id"]))
    if not ok:
        raise LoradeckError(f"scancel {job['id']} failed: {message}")
