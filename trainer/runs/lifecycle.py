"""Training runs from the outside: create, launch, watch, stop, resume and list them.

The trainer (`python -m loradeck.trainer.train.process RUN_DIR [--resume]`, or `accelerate launch ... -m
loradeck.trainer.train.process RUN_DIR` for several GPUs) runs as its own process in a new session, with
stdout/stderr appended to train.log, so closing the TUI or dropping SSH never stops it. Everything
here reads the run's files and signals its process group; it never imports torch, so the TUI and CLI
use it freely.

A run's state comes from three files: events.jsonl (run_started / run_finished), status.json (the
trainer's pid and heartbeat, every <= 2 s) and launch.json (what this module started, when). A run
whose process is gone without run_finished, or whose heartbeat went stale, is `crashed`; one whose
process is gone without ever having beaten and whose log says why (it died at start-up:
loradeck.trainer.runs.launch_failure) is `failed`; a live one whose status.json says it is stopping is
`stopping`. The states are loradeck.trainer.runs.states.RunState.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable

from loradeck.trainer import children, process_info
from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.cli_hint import command
from loradeck.trainer.config import hub_model_family
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.dataset import preflight
from loradeck.trainer.dataset.project import Project, dataset_images
from loradeck.trainer.errors import LoradeckError, ModelError
from loradeck.trainer.events import EventReader, EventSummary, EventWriter, event_time, number, summarize
from loradeck.trainer.gpu import monitor as gpu_monitor
from loradeck.trainer.runs import launch_failure
from loradeck.trainer.runs import queue_folder as run_queue
from loradeck.trainer.runs.files import RunFiles, read_status
from loradeck.trainer.runs.states import ACTIVE, FINISHED, LIVE, RunState
from loradeck.trainer.slurm import batch as slurm
from loradeck.trainer.train import models, optional_packages
from loradeck.trainer.train import state as train_state

TRAIN_MODULE = "loradeck.trainer.train.process"
# The trainer beats every <= 2 s from a thread; this much silence means it is dead or hung.
STALE_SECONDS = 30.0
# A run folder that was created but never launched reads as `starting` this long, then `crashed`.
UNLAUNCHED_GRACE = 120.0


# ---------------------------------------------------------------------------------------- creating

def new_run_id(now: float | None = None) -> str:
    """A sortable, path-safe id: 20261126-081500-042c (local time, milliseconds, a random hex digit)."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    return f"{stamp}-{int(now * 1000) % 1000:03d}{secrets.token_hex(1)[0]}"


def check_dataset(project: Project, cfg=None) -> list[str]:
    """Refuse to start a run the dataset cannot feed (before any process starts); returns the
    preflight warnings worth showing. Uses loradeck.trainer.dataset.preflight's report (`loradeck check`)."""
    try:
        report = preflight.check(project, cfg)
    except LoradeckError:
        raise
    except Exception as e:  # preflight itself broke: still refuse the one thing that surely fails
        report = {"problems": [{"level": "warning", "message": f"preflight could not run ({e})"}]}
    errors = [p["message"] for p in report["problems"] if p["level"] == "error"]
    if not dataset_images(project) and not errors:
        errors = [f"the dataset has no images (run: {command('import', project.name, 'FOLDER')},"
                  f" then {command('prep', project.name)})"]
    if errors:
        raise LoradeckError(f"cannot train {project.name!r}: " + "; ".join(errors),
                            hint=f"details: {command('check', project.name)}")
    # Package warnings are check_requirements' to say (once, with the run's other notes).
    return [p["message"] for p in report["problems"] if p["level"] != "error" and p.get("code") != "package"]


def check_gpus(gpus: int) -> list[str]:
    """Refuse `gpus` > 1 when NVML sees fewer GPUs; a note when NVML cannot tell."""
    if gpus <= 1:
        return []
    seen = len(gpu_monitor.query_devices())
    if seen == 0:
        reason = gpu_monitor.unavailable_reason()
        return [f"gpus = {gpus}, but NVML cannot count the GPUs here ({reason}); accelerate will try"]
    if seen < gpus:
        raise LoradeckError(f"gpus = {gpus}, but only {seen} GPU(s) are visible",
                            hint="lower --gpus, or check CUDA_VISIBLE_DEVICES")
    return []


def _hub_cached(repo_id: str) -> bool:
    """Is a snapshot of hub repo `repo_id` in the local Hugging Face cache (no network), weights and all?
    Its configs alone do not count: creating a run fetches those (config.hub_model_family)."""
    try:
        from huggingface_hub import snapshot_download  # heavy: only when a hub model is named

        folder = Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=["model_index.json"]))
    except Exception:  # not cached, a malformed id, a broken cache: the trainer will say which
        return False
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    return (folder / "model_index.json").is_file() and weights.is_file()


def check_requirements(cfg) -> list[str]:
    """Refuse, before any run folder or process exists, a run that would fail while loading: a
    base model that is not there (a missing local path, or a hub id absent from the cache while
    HF_HUB_OFFLINE is set) and knobs whose package is not installed (loradeck.trainer.train.optional_packages).
    Returns notes."""
    notes: list[str] = []
    if models.kind_of(cfg.base_model) == "hub" and not _hub_cached(cfg.base_model):
        from huggingface_hub import constants  # heavy: only when a hub model is named

        if constants.HF_HUB_OFFLINE:
            raise ModelError(f"base model {cfg.base_model} is not in the Hugging Face cache and HF_HUB_OFFLINE is set",
                             hint=f"pre-download it on a machine with network: hf download {cfg.base_model},"
                                  " or point --base-model at a local folder or .safetensors file")
        notes.append(f"base model {cfg.base_model} is not in the Hugging Face cache: the run downloads it first")
    optional_packages.check_optimizer(cfg.optimizer)
    notes.extend(optional_packages.warnings_for(cfg))  # xformers missing: sdpa, said here and in the run
    return notes


def create_run_from(project: Project, resolved: run_config.ResolvedConfig) -> RunFiles:
    """Make runs/<new id>/ with the resolved config.toml; the run is not started.

    Preflight warnings are added to `resolved.notes`; preflight errors (dataset, base model,
    missing packages) refuse the run before its folder exists, and so does a hub model that is not SD 1.x
    or SDXL: its family, unknown to the network-free resolve when its configs are not cached, is read
    from the hub here (loradeck.trainer.config.hub_model_family) and kept in `resolved.family`.
    """
    resolved.notes.extend(check_requirements(resolved.config))
    if resolved.family is None and models.kind_of(resolved.config.base_model) == "hub":
        # Resolving stays network-free; here, once, an uncached hub id's configs say what it is.
        resolved.family = hub_model_family.fetch(resolved.config.base_model)
    resolved.notes.extend(f"dataset: {w}" for w in check_dataset(project, resolved.config))
    resolved.notes.extend(check_gpus(resolved.config.gpus))
    project.runs.mkdir(parents=True, exist_ok=True)
    newest = max((d.name for d in project.runs.iterdir() if not d.name.startswith(".")), default="")
    for _ in range(50):
        run_id = new_run_id()
        if run_id <= newest and run_id[:15] == newest[:15]:  # same second: keep creation order
            time.sleep(0.002)
            continue
        run_dir = project.run_dir(run_id)
        try:
            run_dir.mkdir()
            break
        except FileExistsError:
            continue
    else:
        raise LoradeckError(f"could not create a new run folder in {project.runs}")
    files = RunFiles(run_dir)
    try:
        run_config.write_run_config(files.config, resolved)
    except BaseException:
        # An empty folder would list as a broken run; nothing of the user's is in it yet.
        try:
            run_dir.rmdir()
        except OSError:
            pass
        raise
    return files


def create_run(project: Project, overrides: dict[str, Any] | None = None,
               config_file: str | os.PathLike | None = None) -> RunFiles:
    """Resolve the config (defaults < project.toml < config_file < overrides) into a new run folder."""
    return create_run_from(project, run_config.resolve(project, overrides or {}, config_file))


# --------------------------------------------------------------------------------------- launching

def build_command(run_dir: Path, *, resume: bool = False, gpus: int = 1,
                  mixed_precision: str = "no", python: str | None = None) -> list[str]:
    """The trainer's command line: one process, or `accelerate launch` for several GPUs.

    The run folder goes in absolute: the trainer starts with its run folder as working folder.
    """
    python = python or sys.executable
    tail = ["-m", TRAIN_MODULE, os.path.abspath(run_dir)] + (["--resume"] if resume else [])
    if gpus <= 1:
        return [python, *tail]
    # `python -m accelerate.commands.launch` is `accelerate launch` from this interpreter's env.
    return [python, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus),
            "--num_machines", "1", "--mixed_precision", mixed_precision, "--dynamo_backend", "no", *tail]


def read_launch(files: RunFiles) -> dict[str, Any] | None:
    try:
        data = json.loads(files.launch.read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None
    return data if isinstance(data, dict) else None


def launch(files: RunFiles, *, resume: bool = False, gpus: int | None = None,
           command: list[str] | None = None) -> subprocess.Popen:
    """Start the trainer for `files` in a new session and return its Popen (the caller may watch it).

    stdout+stderr are appended to train.log, stdin is /dev/null; launch.json records the pid.
    """
    cfg, _ = run_config.read_run_config(files.config)
    gpus = cfg.gpus if gpus is None else gpus
    cmd = command or build_command(files.dir, resume=resume, gpus=gpus, mixed_precision=cfg.mixed_precision)
    launched_at = time.time()
    with open(files.log, "ab") as log:
        log.write(f"\n=== loradeck {time.strftime('%Y-%m-%d %H:%M:%S')}: {' '.join(cmd)}\n".encode())
        log.flush()
        proc = children.start(cmd, detached=True, stdout=log, stderr=subprocess.STDOUT, cwd=files.dir)
    record = {"pid": proc.pid, "pgid": proc.pid, "host": socket.gethostname(), "time": launched_at,
              "proc_start": _proc_start(proc.pid), "command": cmd, "resume": resume, "gpus": gpus}
    try:
        atomic_write_text(files.launch, json.dumps(record))
    except BaseException:
        # Without its launch record nobody could tell this run is alive: do not leave it running.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    return proc


def start(files: RunFiles, *, resume: bool = False, gpus: int | None = None) -> int:
    """Start the run detached (it outlives this process) and return its pid."""
    proc = launch(files, resume=resume, gpus=gpus)
    # Reap it when it ends so a long-lived caller (the TUI) never collects zombies.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc.pid


# ------------------------------------------------------------------------------------ process checks

def _proc_start(pid: int) -> float | None:
    """When process `pid` started (Unix seconds); None where that is unknown."""
    return process_info.start_time(pid)


def process_alive(pid: Any, *, started: float | None = None, started_before: float | None = None,
                  cmd_contains: Iterable[str] = ()) -> bool:
    """Is `pid` a live (not zombie) process, and the same process we mean?

    Guards against pid reuse where psutil can tell: its start time must equal `started` (within a
    second) or be no later than `started_before`, and its command line must hold one of
    `cmd_contains`.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    live = process_info.running(pid)
    if live is not None and not live:
        return False
    begun = _proc_start(pid)
    if begun is not None:
        if started is not None and abs(begun - started) > 1.0:
            return False
        if started_before is not None and begun > started_before + 1.0:
            return False
    needles = list(cmd_contains)
    if needles:
        argv = process_info.argv(pid)
        # Empty while the process is still inside execve (the launcher can get here that early).
        if argv and not any(n in " ".join(argv) for n in needles):
            return False
    return True


def _same_host(record: dict[str, Any]) -> bool:
    return record.get("host") in (None, socket.gethostname())


def _status_alive(files: RunFiles, status: dict[str, Any], now: float) -> bool:
    beat = status.get("heartbeat")
    if not isinstance(beat, (int, float)) or now - beat > STALE_SECONDS:
        return False
    if not _same_host(status):
        return True  # on another machine (shared disk): the heartbeat is all we can see
    return process_alive(status.get("pid"), started_before=beat, cmd_contains=(TRAIN_MODULE, str(files.dir)))


def _launch_alive(files: RunFiles, launch_rec: dict[str, Any], now: float) -> bool:
    if not _same_host(launch_rec):
        return now - float(launch_rec.get("time") or 0) < STALE_SECONDS * 10
    return process_alive(launch_rec.get("pid"), started=launch_rec.get("proc_start"),
                         cmd_contains=(TRAIN_MODULE, str(files.dir)))


# -------------------------------------------------------------------------------------- reading events

# Event decoding is loradeck.trainer.events' (summarize, number, event_time); these two names stay
# here for the tests that reach them through this module.
event_summary = summarize
_EventSummary = EventSummary


def _queued_at(files: RunFiles) -> float:
    """When the run was last put in the queue (queue.json, loradeck.trainer.runs.queue); -inf if never."""
    try:
        value = json.loads(files.queue.read_text()).get("time")
    except (OSError, ValueError, AttributeError):
        return float("-inf")
    return float(value) if isinstance(value, (int, float)) else float("-inf")


def run_state(files: RunFiles, *, _events: dict[str, dict[str, Any]] | None = None,
              slurm_aware: bool = True) -> str:
    """The RunState (queued | starting | running | stopping | completed | stopped | failed | crashed),
    as every reader sees it."""
    return run_state_detail(files, _events=_events, slurm_aware=slurm_aware)[0]


def run_state_detail(files: RunFiles, *, _events: dict[str, dict[str, Any]] | None = None,
                     slurm_aware: bool = True) -> tuple[str, str | None]:
    """(state, detail): the state, and for a Slurm run what Slurm says (job, reason, node)."""
    events = _events if _events is not None else summarize(files.events)
    state = _file_state(files, events)
    if slurm_aware:
        finished = events.get("run_finished")
        seen = slurm.view(files, state, event_time(finished) if finished else None, ACTIVE)
        if seen is not None:
            return seen
    return state, None


def _file_state(files: RunFiles, events: dict[str, dict[str, Any]]) -> str:
    """The state the run folder alone shows (launch record, status heartbeat, events)."""
    started, finished = events.get("run_started"), events.get("run_finished")
    launch_rec, status = read_launch(files), read_status(files)
    now = time.time()
    t_launch = (number(launch_rec.get("time")) or 0.0) if launch_rec else float("-inf")
    t_queued = _queued_at(files)
    t_latest = max(event_time(started), t_launch, t_queued)
    beat = (number(status.get("heartbeat")) or 0.0) if status else 0.0
    if finished is not None and event_time(finished) >= t_latest:
        return RunState(finished["status"]) if finished.get("status") in FINISHED else RunState.FAILED
    # A trainer that could not write events may still have left its final state in status.json.
    if status and status.get("state") in FINISHED and beat >= t_latest:
        return RunState(status["state"])
    if t_queued > max(event_time(started), t_launch):
        return RunState.QUEUED  # an orphan (its waiter is gone) too: trainer.runs.queue_folder.describe says which
    if status and beat >= t_launch:
        alive = _status_alive(files, status, now)
    elif launch_rec:
        alive = _launch_alive(files, launch_rec, now)
    else:  # created, never launched
        try:
            alive = started is None and now - files.dir.stat().st_mtime < UNLAUNCHED_GRACE
        except OSError:
            alive = False
    if not alive:
        if launch_failure.never_started(launch_rec, status, started, t_launch, files.log):
            return RunState.FAILED  # nothing ran, nothing to resume: the log's error line says why
        return RunState.CRASHED
    if status and status.get("state") == RunState.STOPPING and beat >= t_launch:
        return RunState.STOPPING  # asked to stop: saving its state on the way out
    return RunState.RUNNING if started is not None and event_time(started) >= t_launch else RunState.STARTING


# ------------------------------------------------------------------------------------------ listing

@dataclass
class RunInfo:
    """One run as the runs table shows it."""

    run_id: str
    files: RunFiles
    state: str
    step: int
    total_steps: int | None
    epoch: int | None
    started: float | None       # Unix seconds: first run_started (else the launch)
    finished: float | None      # Unix seconds of run_finished, for finished runs
    output: str | None          # the final LoRA, once it exists
    loss: float | None          # the last step's loss
    base_model: str | None
    output_name: str | None
    message: str | None         # why it failed / stopped, when the run said; what a queued run waits for
    queue: dict[str, Any] | None = None  # a queued run's place (loradeck.trainer.runs.queue_folder.describe)

    @property
    def dir(self) -> Path:
        return self.files.dir

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "files"}
        data["dir"] = str(self.dir)
        return data


def run_info(files: RunFiles) -> RunInfo:
    """Summarise one run from its files."""
    events = summarize(files.events)
    state, detail = run_state_detail(files, _events=events)
    step_ev, finished_ev = events.get("step") or {}, events.get("run_finished")
    status = read_status(files) or {}
    launch_rec = read_launch(files) or {}
    try:
        cfg, _ = run_config.read_run_config(files.config)
        base_model, output_name = cfg.base_model, cfg.output_name
    except LoradeckError:
        cfg, base_model, output_name = None, None, None
    first = events.get("first_run_started")
    started = number(first.get("time")) if first else number(launch_rec.get("time"))
    total = step_ev.get("total_steps") or status.get("total_steps") or (
        (events.get("run_started") or {}).get("total_steps"))
    output = finished_ev.get("output") if finished_ev else None
    if not output and output_name and files.output(output_name).is_file():
        output = str(files.output(output_name))
    message = finished_ev.get("message") if finished_ev and state in FINISHED else None
    if state == "failed" and not message:
        err = events.get("error")
        message = err.get("message") if err else None
    if state == "failed" and not message and never_started(files):
        message = launch_failure.describe(files.log)
    if detail:
        message = f"{detail}: {message}" if message and state in FINISHED else detail
    loss = number(step_ev.get("loss"))
    queue = None
    if state == "queued" and detail is None:  # in the local queue (a Slurm job's detail says why it waits)
        queue = run_queue.describe(files)
        message = run_queue.queue_line(queue)
    return RunInfo(
        run_id=files.run_id, files=files, state=state,
        step=int(step_ev.get("step") or status.get("step") or 0),
        total_steps=int(total) if isinstance(total, int) else None,
        epoch=step_ev.get("epoch"), started=started,
        finished=event_time(finished_ev) if finished_ev and state in FINISHED else None,
        output=output, loss=loss, base_model=base_model, output_name=output_name, message=message, queue=queue)


def run_folders(project: Project) -> list[RunFiles]:
    """The project's run folders, oldest first (run ids sort by creation time)."""
    if not project.runs.is_dir():
        return []
    folders = (RunFiles(d) for d in sorted(project.runs.iterdir(), key=lambda d: d.name)
               if d.is_dir() and not d.name.startswith("."))
    return [files for files in folders if files.config.is_file()]


def list_runs(project: Project) -> list[RunInfo]:
    """Every run of the project, oldest first."""
    return [run_info(files) for files in run_folders(project)]


def latest_run(project: Project) -> RunFiles | None:
    folders = run_folders(project)
    return folders[-1] if folders else None


def find_run(project: Project, run_id_or_prefix: str) -> RunFiles:
    """A run by its id, a unique prefix of it, or `latest`."""
    folders = run_folders(project)
    if run_id_or_prefix in ("latest", "last"):
        if not folders:
            raise LoradeckError(f"project {project.name!r} has no runs",
                                hint=f"start one with: {command('train', project.name)}")
        return folders[-1]
    exact = [f for f in folders if f.run_id == run_id_or_prefix]
    matches = exact or [f for f in folders if f.run_id.startswith(run_id_or_prefix)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise LoradeckError(f"no run {run_id_or_prefix!r} in project {project.name!r}",
                            hint=f"list them with: {command('runs', project.name)}")
    raise LoradeckError(f"run {run_id_or_prefix!r} is ambiguous: {', '.join(f.run_id for f in matches)}")


# --------------------------------------------------------------------------------- stopping, resuming

def _target_pgid(files: RunFiles) -> tuple[int | None, int | None]:
    """(process group, pid) of the run's live process on this machine: the launched session, else
    the trainer's own group. The heartbeat's age does not matter here: a hung trainer (silent, so
    read as crashed) must still be reachable by a stop."""
    now = time.time()
    launch_rec = read_launch(files)
    if launch_rec and _same_host(launch_rec) and _launch_alive(files, launch_rec, now):
        return launch_rec.get("pgid") or launch_rec["pid"], launch_rec["pid"]
    status = read_status(files)
    beat = number((status or {}).get("heartbeat"))
    if status and _same_host(status) and beat is not None and process_alive(
            status.get("pid"), started_before=beat, cmd_contains=(TRAIN_MODULE, str(files.dir))):
        try:
            return os.getpgid(status["pid"]), status["pid"]
        except OSError:
            return None, status["pid"]
    return None, None


def never_started(files: RunFiles) -> bool:
    """Did the newest launch of this run die before its trainer started (loradeck.trainer.runs.launch_failure)?
    Only for a run whose process is gone (its state is failed or crashed)."""
    launch_rec = read_launch(files)
    if not launch_rec:
        return False
    t_launch = number(launch_rec.get("time")) or 0.0
    events = summarize(files.events)
    if event_time(events.get("run_finished")) >= t_launch:
        return False  # it reported its own end
    return launch_failure.never_started(launch_rec, read_status(files), events.get("run_started"), t_launch,
                                        files.log)


def lingering_pid(files: RunFiles) -> int | None:
    """The pid of a trainer process that is still alive although the run reads as finished or
    crashed (hung, or still exiting); None when there is none."""
    return _target_pgid(files)[1]


def _trainer_ranks(files: RunFiles) -> list[int]:
    """The live trainer processes of this run (not its launcher), found by their command line (psutil).

    Not by process group: torch's launcher (which `accelerate launch --multi_gpu` runs) starts every
    rank in a session of its own, so a signal to the launched group never reaches them.
    """
    run_dir = os.path.realpath(files.dir)
    return [pid for pid in process_info.all_pids()
            if _is_rank(process_info.argv(pid) or []) and process_info.module_arg(pid, TRAIN_MODULE) == run_dir
            and process_info.running(pid)]


LAUNCHERS = ("accelerate.commands.launch", "torch.distributed.run", "torch.distributed.launch")


def _is_rank(argv: list[str]) -> bool:
    """`... -m loradeck.trainer.train.process RUN_DIR` not preceded by a launcher (accelerate, torchrun)."""
    if TRAIN_MODULE not in argv:
        return False
    before = argv[:argv.index(TRAIN_MODULE)]
    return not any(a in LAUNCHERS or Path(a).name.startswith(("accelerate", "torchrun")) for a in before)


def signal_run(files: RunFiles, sig: int) -> int:
    """Send `sig` to the run's processes; returns the pid signalled (the launched one).

    One process: its whole process group. A multi-GPU launch: SIGTERM/SIGINT go to the trainer
    ranks only, because the launcher answers SIGTERM by killing the ranks 30 s later, which could
    cut a final save short; the launcher exits by itself when they have. SIGKILL hits the group and
    every rank (each rank sits in a session of its own).
    """
    pgid, pid = _target_pgid(files)
    if pid is None:
        raise LoradeckError(f"run {files.run_id} has no live process on this machine")
    launch_rec = read_launch(files) or {}
    ranks = _trainer_ranks(files) if pgid is not None and int(launch_rec.get("gpus") or 1) > 1 else []
    for rank_pid in ranks:
        with contextlib.suppress(ProcessLookupError):
            os.kill(rank_pid, sig)
    if ranks and sig != signal.SIGKILL:
        return pid
    if pgid is not None and pgid != os.getpgrp():
        os.killpg(pgid, sig)
    else:  # never signal our own group (a trainer started by hand from this shell)
        os.kill(pid, sig)
    return pid


def stop(files: RunFiles, timeout: float = 60.0, *, force: bool = False) -> dict[str, Any]:
    """SIGTERM the run (it finishes the step, saves state, reports `stopped`) and wait up to `timeout`.

    With `force`, a run still alive after the timeout gets SIGKILL (it then reads as crashed and
    can be resumed from its last saved state). Returns a report: run_id, pid, state, waited_s, forced.
    """
    if slurm.read_record(files) is not None:
        return _stop_slurm_run(files, timeout, force=force)
    state = run_state(files)
    lingering = lingering_pid(files) if state not in ACTIVE else None
    if state not in ACTIVE and lingering is None:
        raise LoradeckError(f"run {files.run_id} is not running (it is {state})")
    was_started = state != "starting"
    if state in FINISHED:
        # It already reported its end and is still exiting (an earlier stop ran out of time):
        # wait for it; a second SIGTERM could cut its teardown short.
        pid = lingering
    else:
        pid = signal_run(files, signal.SIGTERM)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        state = run_state(files)
        if state not in ACTIVE and not lingering_pid(files):
            break
        time.sleep(0.2)
    forced = False
    alive = state in ACTIVE or lingering_pid(files) is not None
    if alive and force:
        try:
            signal_run(files, signal.SIGKILL)
            forced = True
        except LoradeckError:
            pass
        time.sleep(0.5)
        state = run_state(files)
    if not was_started and not forced and (state == "crashed" or (state == "failed" and never_started(files))):
        # Stopped while it was still loading: nothing was trained, so this is a stop, not a crash.
        writer = EventWriter(files.events)
        try:
            writer.emit("run_finished", status="stopped", steps_done=0,
                        message="stopped before training started")
        finally:
            writer.close()
        state = "stopped"
    stopped = state not in ACTIVE and lingering_pid(files) is None
    return {"ok": stopped, "run_id": files.run_id, "pid": pid, "state": state,
            "waited_s": round(time.monotonic() - t0, 2), "forced": forced}


def cli_hint_runs(files: RunFiles) -> str:
    return command("runs", files.dir.parent.parent.name)


def _stop_slurm_run(files: RunFiles, timeout: float, *, force: bool) -> dict[str, Any]:
    """Stop a run that is a Slurm job: a queued job is cancelled (the run reads stopped), a running
    one gets SIGTERM through scancel so it saves state first; `force` then cancels the job outright."""
    live = LIVE
    state = run_state(files)
    if state not in live:
        raise LoradeckError(f"run {files.run_id} is not running (it is {state})")
    job = slurm.latest_job(slurm.read_record(files)) or {}
    t0 = time.monotonic()
    if slurm.cancel(files) == "cancelled":
        writer = EventWriter(files.events)
        try:
            writer.emit("run_finished", status="stopped", steps_done=0,
                        message=f"cancelled while queued (Slurm job {job.get('id')})")
        finally:
            writer.close()
        return {"ok": True, "run_id": files.run_id, "pid": None, "state": "stopped",
                "waited_s": round(time.monotonic() - t0, 2), "forced": False, "slurm_job": job.get("id")}
    while time.monotonic() - t0 < timeout:
        state = run_state(files)
        if state not in live:
            break
        time.sleep(0.5)
    forced = False
    if state in live and force:
        slurm.kill(files)
        forced = True
        time.sleep(1.0)
        state = run_state(files)
    return {"ok": state not in live, "run_id": files.run_id, "pid": None, "state": state,
            "waited_s": round(time.monotonic() - t0, 2), "forced": forced, "slurm_job": job.get("id")}


def check_resumable(files: RunFiles) -> str:
    """The run's state if it may be resumed; a clear LoradeckError if not."""
    if not files.config.is_file():
        raise LoradeckError(f"{files.dir} is not a run (config.toml is missing)")
    state = run_state(files)
    if state in ACTIVE:
        raise LoradeckError(f"run {files.run_id} is still {state}",
                            hint="stop it first, or watch it with `loradeck monitor`")
    if state == "queued" and files.slurm_record.is_file():
        raise LoradeckError(f"run {files.run_id} is queued in Slurm; it starts when Slurm allocates it",
                            hint=f"see: {cli_hint_runs(files)}")
    if state == "queued":
        raise LoradeckError(f"run {files.run_id} is queued; it starts by itself",
                            hint=f"an orphaned one (its waiter gone): {command('requeue', files.dir.parent.parent.name, files.run_id)};"
                                 f" or cancel it: {command('cancel', files.dir.parent.parent.name, files.run_id)}")
    if state == "completed":
        raise LoradeckError(f"run {files.run_id} already completed; there is nothing to resume",
                            hint="start a new run with `loradeck train`")
    if state == "failed" and never_started(files):
        if train_state.latest(files.state) is None:
            project = files.dir.parent.parent.name
            raise LoradeckError(f"run {files.run_id} cannot be resumed: {launch_failure.describe(files.log)};"
                                " nothing was trained or saved",
                                hint=f"fix that, then start a new run: {command('train', project)}")
    pid = lingering_pid(files)
    if pid is not None:
        # Silent but alive (hung): two trainers must never write one run folder.
        raise LoradeckError(f"run {files.run_id} reads as {state}, but its trainer (pid {pid}) is still alive",
                            hint="stop it first: "
                                 + command("stop", files.dir.parent.parent.name, files.run_id, "--force"))
    return state


def resume(files: RunFiles, *, detach: bool = True, gpus: int | None = None):
    """Continue a stopped, failed or crashed run from its last saved state.

    Returns the pid when `detach` (the run outlives the caller), else the Popen for the caller to
    watch (`follow`).
    """
    check_resumable(files)
    cfg = run_config.read_run_config(files.config)[0]
    check_requirements(cfg)  # e.g. the model is still missing
    record = slurm.read_record(files)
    if record is not None:  # it was a Slurm job: it continues as one (a new job id)
        return slurm.submit(files, slurm.settings_of(record), gpus=gpus or cfg.gpus,
                            label=slurm_label(files), reason="resume")
    if detach:
        return start(files, resume=True, gpus=gpus)
    return launch(files, resume=True, gpus=gpus)


def slurm_label(files: RunFiles) -> str:
    """The Slurm job name of a run: loradeck:<project>:<run id>."""
    return f"loradeck:{files.dir.parent.parent.name}:{files.run_id}"


def submit_to_slurm(files: RunFiles, settings) -> str:
    """Submit a new run (created by create_run*) as a Slurm batch job; returns the job id."""
    cfg = run_config.read_run_config(files.config)[0]
    return slurm.submit(files, settings, gpus=cfg.gpus, label=slurm_label(files), reason="submit")


def follow(files: RunFiles, proc: subprocess.Popen | None, on_event: Callable[[dict[str, Any]], None],
           *, poll: float = 0.25, from_start: bool = False,
           on_status: Callable[[dict[str, Any]], None] | None = None) -> str:
    """Feed the run's new events to `on_event` (and each poll's status.json to `on_status`) until
    `proc` exits, or with `proc` None (a run started elsewhere) until the run is no longer active;
    returns the final state."""
    offset = 0
    if not from_start:
        try:
            offset = files.events.stat().st_size  # only what this launch writes
        except OSError:
            pass
    reader = EventReader(files.events, offset=offset)
    while True:
        done = proc.poll() is not None if proc is not None else run_state(files) not in ACTIVE
        for event in reader.read_new():
            on_event(event)
        if on_status is not None:
            status = read_status(files)
            if status:
                on_status(status)
        if done:
            break
        time.sleep(poll)
    return run_state(files)


EXIT_CODES = {"completed": 0, "failed": 1, "crashed": 1, "stopped": 2}


def exit_code(state: str) -> int:
    """The foreground CLI's exit status for a run's final state."""
    return EXIT_CODES.get(state, 1)
