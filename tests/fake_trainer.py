"""The suite's one stand-in for `python -m loradeck.trainer.train.process RUN_DIR [--resume]`: the same process
contract (run files, heartbeats, events, signals, resume), no torch, well under a second per run.

    python -m tests.fake_trainer RUN_DIR [--resume] [--steps N] [--step-seconds S]

It beats status.json every 0.2 s from a thread and writes run_started / step / run_finished events through the
engine's own EventWriter and RunFiles. It saves its step counter after every step (its "state") and resumes from it.
On SIGTERM or SIGINT it finishes the current step (a step is never cut short, as with the real trainer), reports
`stopped` and exits 0. Total steps: --steps, else the run config's max_train_steps, else 10.

Options the launching test sets in the environment (children inherit it):
  FAKE_STEP_SECONDS  seconds per step (default 0.05; --step-seconds wins)
  FAKE_FAIL=1        fail at the last step with an `error` event (exit 1)
  FAKE_EXIT_SECONDS  stay alive this long after reporting `stopped` (a real trainer still tears down)

Tests use it through `use_fake_trainer(monkeypatch)`, which makes loradeck.trainer.runs.lifecycle launch it.
`lookalike_trainer` is the other kind of fake: a process that only looks like a run's trainer.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.config.resolve import read_run_config
from loradeck.trainer.events import EventWriter
from loradeck.trainer.runs.files import RunFiles, write_status

MODULE = "tests.fake_trainer"
TRAINER_MODULE = "loradeck.trainer.train.process"  # what the engine looks for on a trainer's command line
REPO = Path(__file__).resolve().parents[1]


def use_fake_trainer(monkeypatch, step_seconds: float = 0.05) -> str:
    """Make runs launched by loradeck.trainer.runs.lifecycle start this module; return its name.

    The engine recognises its trainers by TRAIN_MODULE on their command line, so it is patched, not just the
    command."""
    from loradeck.trainer.runs import lifecycle

    monkeypatch.setattr(lifecycle, "TRAIN_MODULE", MODULE)
    monkeypatch.setenv("FAKE_STEP_SECONDS", str(step_seconds))
    children_can_import_tests(monkeypatch)
    return MODULE


def children_can_import_tests(monkeypatch) -> None:
    """Let child processes run `-m tests.…`: they start in their run folder and loradeck installs without tests/,
    so PYTHONPATH names this checkout (children inherit our environment)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


def lookalike_trainer(run_dir, *, seconds: float = 60, ignore_sigterm: bool = False, module: str = TRAINER_MODULE,
                      **popen) -> subprocess.Popen:
    """A process the engine takes for the trainer of `run_dir` (its command line names the trainer module and the
    run) that only sleeps, for tests that write the run's files themselves; `ignore_sigterm`: a hung trainer."""
    code = "import signal, time; "
    code += "signal.signal(signal.SIGTERM, signal.SIG_IGN); " if ignore_sigterm else ""
    return subprocess.Popen([sys.executable, "-c", code + f"time.sleep({seconds})", module, str(run_dir)], **popen)


def command(run_dir, *, resume: bool = False, steps: int | None = None, step_seconds: float | None = None,
            python: str | None = None) -> list[str]:
    """The command line that starts the fake trainer on `run_dir`."""
    cmd = [python or sys.executable, "-m", MODULE, str(run_dir)]
    if steps is not None:
        cmd += ["--steps", str(steps)]
    if step_seconds is not None:
        cmd += ["--step-seconds", str(step_seconds)]
    return cmd + (["--resume"] if resume else [])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--step-seconds", type=float)
    args = parser.parse_args(argv)

    files = RunFiles(args.run_dir)
    cfg, _dataset = read_run_config(files.config)
    total = args.steps or cfg.max_train_steps or 10
    step_seconds = args.step_seconds if args.step_seconds is not None else \
        float(os.environ.get("FAKE_STEP_SECONDS", "0.05"))
    state_file = files.state / "step.txt"
    step = int(state_file.read_text()) if args.resume and state_file.exists() else 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    current = {"state": "running", "step": step}
    status_lock = threading.Lock()  # a beat never writes an older state over the final one
    finished = threading.Event()

    def beat():
        while not finished.is_set():
            with status_lock:
                write_status(files, state=current["state"], step=current["step"], total_steps=total)
            finished.wait(0.2)

    beater = threading.Thread(target=beat, daemon=True)
    beater.start()
    writer = EventWriter(files.events)
    config = dict(cfg.to_dict(), max_train_steps=total)
    writer.emit("run_started", run_id=files.run_id, config=config, environment={"device": "cpu"},
                total_steps=total, resumed_from=step if args.resume else None)
    print(f"fake trainer pid {os.getpid()} from step {step}"
          f" CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
    files.state.mkdir(exist_ok=True)

    def finish(status: str, code: int = 0, linger: float = 0.0, **fields) -> int:
        writer.emit("run_finished", status=status, steps_done=step, **fields)
        with status_lock:
            current["state"] = status
            write_status(files, state=status, step=step, total_steps=total)
        print(f"fake trainer {status}", flush=True)
        time.sleep(linger)  # still beating, as a trainer that reported the end and is tearing down
        finished.set()
        beater.join()
        writer.close()
        return code

    while step < total:
        time.sleep(step_seconds)  # not cut short by a signal: a stop waits for the step, as with the real trainer
        step += 1
        current["step"] = step
        if os.environ.get("FAKE_FAIL") and step == total:
            writer.emit("error", kind="nan", message="loss is nan", hint="lower the learning rate")
            return finish("failed", 1, message="loss is nan")
        writer.emit("step", step=step, total_steps=total, epoch=1, loss=1.0 / step, lr=cfg.learning_rate,
                    step_time=step_seconds)
        atomic_write_text(state_file, str(step))
        print(f"step {step}", flush=True)
        if stop.is_set():
            return finish("stopped", linger=float(os.environ.get("FAKE_EXIT_SECONDS", "0")))
    output = files.output(cfg.output_name)
    output.write_bytes(b"fake lora")
    return finish("completed", output=str(output))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
