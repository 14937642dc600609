"""Inside a Slurm job: `python -m loradeck.trainer.slurm.job RUN_DIR` (the last line of runs/<id>/slurm.sbatch).

It starts the trainer on the run folder exactly as a local launch does (loradeck.trainer.runs.lifecycle.launch: one
process, or `accelerate launch` for several GPUs), resuming from the newest saved state when there
is one (a resubmitted, requeued or preempted job), and then waits for it. Signals:

- USR1 (sbatch `--signal=B:USR1@N`, N seconds before the time limit): the trainer is asked to stop
  (SIGTERM: it finishes the step and saves state); once it has, the run is resubmitted to continue,
  up to `max_resubmits` times.
- TERM (`loradeck stop` through `scancel --signal=TERM --full`, or Slurm ending/preempting the job):
  the trainer is asked to stop and nothing is resubmitted. A preempted job that Slurm requeues comes
  back here and resumes.

The wrapper never imports torch: it is a supervisor, the trainer is its child.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
from pathlib import Path

from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import EventWriter
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.slurm import batch as slurm


def _has_state(files: RunFiles) -> bool:
    try:
        return any(d.is_dir() for d in files.state.iterdir())
    except OSError:
        return False


def _say(text: str) -> None:
    print(f"[loradeck slurm job] {text}", flush=True)


def _warn(files: RunFiles, message: str, hint: str = "") -> None:
    writer = EventWriter(files.events)
    try:
        writer.emit("warning", message=message, hint=hint)
    finally:
        writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loradeck.trainer.slurm.job",
                                     description="Run one loradeck run inside a Slurm batch job.")
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    files = RunFiles(args.run_dir.resolve())
    if not files.config.is_file():
        print(f"error: {files.config} does not exist (was the run folder deleted?)", file=sys.stderr)
        return 2
    job_id = os.environ.get("SLURM_JOB_ID", "")
    node = os.environ.get("SLURMD_NODENAME") or socket.gethostname()
    if job_id:
        slurm.note_job_started(files, job_id, node)

    time_up = threading.Event()
    proc_holder: list = []

    def forward(signum, _frame):
        if signum == signal.SIGUSR1:
            time_up.set()
        _say(f"{signal.Signals(signum).name}: asking the trainer to save and stop")
        if proc_holder:
            try:
                runs.signal_run(files, signal.SIGTERM)
            except (LoradeckError, OSError):
                try:
                    os.killpg(proc_holder[0].pid, signal.SIGTERM)
                except OSError:
                    pass

    signal.signal(signal.SIGUSR1, forward)
    signal.signal(signal.SIGTERM, forward)
    resume = _has_state(files)
    _say(f"job {job_id or '?'} on {node}: {'resuming' if resume else 'starting'} {files.dir}")
    proc = runs.launch(files, resume=resume)
    proc_holder.append(proc)
    code = proc.wait()
    state = runs.run_state(files, slurm_aware=False)
    _say(f"trainer exited with {code}; the run is {state}")
    record = slurm.read_record(files) or {}
    if time_up.is_set() and state == "stopped" and not record.get("stop_requested"):
        done = int(record.get("resubmits") or 0)
        cap = int(record.get("max_resubmits") if record.get("max_resubmits") is not None else 10)
        if done >= cap:
            _warn(files, f"Slurm time limit reached and the resubmission cap ({cap}) is used up; the run is stopped",
                  hint="raise [slurm] max_resubmits or time_limit, then: loradeck resume PROJECT RUN")
            return code
        try:
            settings = slurm.settings_of(record)
            cfg_gpus = int((runs.read_launch(files) or {}).get("gpus") or 1)
            new_id = slurm.submit(files, settings, gpus=cfg_gpus, label=runs.slurm_label(files),
                                  reason="time_limit")
        except LoradeckError as e:
            _warn(files, f"Slurm time limit reached; resubmitting failed: {e}",
                  hint="resume it by hand: loradeck resume PROJECT RUN")
            return code
        _say(f"time limit: resubmitted as job {new_id} ({done + 1} of at most {cap})")
        _warn(files, f"Slurm time limit near: state saved, continuing as job {new_id}")
    return code


if __name__ == "__main__":
    sys.exit(main())
