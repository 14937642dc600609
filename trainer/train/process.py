"""The trainer process: `python -m loradeck.trainer.train.process RUN_DIR [--resume]`.

Started by trainer.runs.lifecycle in its own session (or under `accelerate launch ... -m trainer.train.process
RUN_DIR` for several GPUs); stdout/stderr go to RUN_DIR/train.log. It reads RUN_DIR/config.toml
(loradeck.trainer.config.resolve.read_run_config, the one reader of it), trains (loradeck.trainer.train.loop), and reports only through the run's files:

    events.jsonl   run_started, step, checkpoint, sample, warning, error, run_finished, gpu (NVML)
    status.json    pid, heartbeat (at least every 2 s while alive), state, step, total_steps, phase

Signals: SIGTERM or SIGINT finish the current step, save resumable state (state/step-<N>/), write
`run_finished` with status `stopped`, and exit 0. `--resume` continues from the newest complete state.

Exit codes: 0 completed or stopped; 1 failed (an `error` event and `run_finished: failed` say why);
2 the run folder or its config.toml could not be read (nothing else can be reported then).
Only the main process (rank 0) writes files; other ranks train and stay quiet.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from loradeck.trainer.config.resolve import read_run_config
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import EventWriter
from loradeck.trainer.gpu import monitor as gpu_monitor
from loradeck.trainer.runs.files import HEARTBEAT_SECONDS, RunFiles, write_status
from loradeck.trainer.train import diagnostics
from loradeck.trainer.train.diagnostics import TrainingFailed

ERROR_KINDS_BY_CLASS = {"ConfigError": "config", "ModelError": "model", "DataError": "data",
                        "RunFolderGone": "io"}


class Heartbeat:
    """Rewrites status.json about every second from a shared progress dict, until stopped."""

    def __init__(self, files: RunFiles, progress: dict[str, Any], interval: float = HEARTBEAT_SECONDS / 2):
        self.files, self.progress, self.interval = files, progress, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> "Heartbeat":
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        try:
            write_status(self.files, **dict(self.progress))
        except OSError:  # a full disk must not kill training; the next beat tries again
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def stop(self, **final: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.progress.update(final)
        self.beat()


class _QuietWriter:
    """Non-main ranks: events go nowhere."""

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        return {"type": type_, **fields}

    def close(self) -> None:
        pass


class LogEcho:
    """A readable line in train.log for each event that matters to a person reading the log."""

    def __init__(self, stream=sys.stdout, every_seconds: float = 5.0):
        self.stream, self.every, self._last = stream, every_seconds, 0.0

    def __call__(self, line: str) -> None:
        event = json.loads(line)
        kind = event.get("type")
        if kind == "gpu":
            return
        if kind == "step":
            now = time.monotonic()
            if now - self._last < self.every and event["step"] not in (1, event["total_steps"]):
                return
            self._last = now
            text = (f"step {event['step']}/{event['total_steps']} epoch {event['epoch']} loss {event['loss']} "
                    f"lr {event['lr']:.3g} {event.get('step_time')} s/step")
        elif kind == "run_started":
            text = f"run {event['run_id']} started on {event.get('device')}: {event.get('total_steps')} steps"
        else:
            text = f"{kind}: " + ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "time"))
        self.stream.write(text + "\n")
        self.stream.flush()


def start_gpu_sampler(writer):
    """NVML sampling into `gpu` events (loradeck.trainer.gpu.monitor); a failure never stops training."""
    try:
        return gpu_monitor.start_sampler(writer, interval=1.0)
    except Exception as e:  # NVML trouble is reported, not fatal
        writer.emit("warning", message=f"GPU monitoring unavailable: {type(e).__name__}: {e}")
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loradeck.trainer.train.process",
                                     description="Train one loradeck run (started by `loradeck train`).")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true", help="continue from the newest saved state")
    args = parser.parse_args(argv)
    files = RunFiles(args.run_dir.resolve())
    if not files.config.is_file():
        print(f"error: {files.config} does not exist", file=sys.stderr)
        return 2

    is_main = int(os.environ.get("RANK", "0")) == 0
    writer = EventWriter(files.events, echo=LogEcho()) if is_main else _QuietWriter()
    progress: dict[str, Any] = {"state": "starting", "step": 0, "total_steps": None, "phase": "starting"}
    heartbeat = Heartbeat(files, progress).start() if is_main else None
    stop = threading.Event()

    def request_stop(signum, _frame):
        if not stop.is_set():
            stop.set()
            progress.update(state="stopping")
            print(f"signal {signal.Signals(signum).name}: stopping after the current step", flush=True)

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    sampler = start_gpu_sampler(writer) if is_main else None

    status, code, steps_done, output = "failed", 1, progress.get("step", 0), None
    config = None  # read inside the try; an early failure has no config for its hint
    try:
        from loradeck.trainer.train import loop as train_loop  # torch, diffusers: after the first heartbeat

        config, dataset = read_run_config(files.config)
        ctx = train_loop.RunContext(files=files, config=config, dataset=dataset, events=writer,
                                    progress=progress, stop=stop, resume=args.resume, is_main=is_main)
        outcome = train_loop.train(ctx)
        status, code, steps_done, output = outcome.status, 0, outcome.steps_done, outcome.output
    except Exception as e:
        steps_done = progress.get("step", 0)
        kind, message, hint, extra = describe_failure(e, phase=progress.get("phase"),
                                                      config=config)
        writer.emit("error", kind=kind, message=message, hint=hint, **extra)
        if kind == "internal":
            traceback.print_exc()
    finally:
        if sampler is not None:
            sampler.stop()
    # From here a late stop request has nothing to stop: ignore it so the exit code stays the run's.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    writer.emit("run_finished", status=status, output=str(output) if output else None, steps_done=steps_done)
    writer.close()
    if heartbeat is not None:
        heartbeat.stop(state=status, step=steps_done)
    return code


def describe_failure(e: BaseException, *, phase: str | None = None,
                     config=None) -> tuple[str, str, str, dict[str, Any]]:
    """(kind, message, hint, extra fields) of the error event for an exception out of the loop;
    an out-of-memory error in any phase (caching, sampling, exporting) gets that phase's hint."""
    if not isinstance(e, TrainingFailed) and diagnostics.is_oom(e):
        e = diagnostics.phase_oom_failure(config, e, phase)

    if isinstance(e, TrainingFailed):
        state = getattr(e, "state", None)
        return e.kind, e.message, e.hint, {"state": str(state) if state else None}
    if isinstance(e, LoradeckError):
        kind = next((k for cls, k in ERROR_KINDS_BY_CLASS.items()
                     if any(c.__name__ == cls for c in type(e).__mro__)), "config")
        return kind, str(e), e.hint or "", {}
    if isinstance(e, OSError):
        return "io", f"{type(e).__name__}: {e}", "check free disk space and permissions of the run folder", {}
    return "internal", f"{type(e).__name__}: {e}", "a bug: see train.log for the traceback", {}


def exit_now(code: int) -> None:
    """End the process without the interpreter's teardown of its modules.

    Everything of the run is written and closed by then (events, status, state, the LoRA; each write
    atomic); what is left is finalising torch/diffusers/transformers module by module, which takes
    ~1.2 s on a CPU box, every run. Only streams need flushing first.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
