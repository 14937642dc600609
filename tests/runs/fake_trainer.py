"""A stand-in for loradeck.trainer.train.process that follows the process contract without torch.

Used by the run-management tests so they exercise real processes, sessions, signals and files in
well under a second per run: `python -m tests.runs.fake_trainer RUN_DIR [--resume]`.
It beats status.json every 0.2 s from a thread, writes run_started / step / run_finished events,
saves its step counter after every step (its "state"), stops on SIGTERM/SIGINT after the current
step, and resumes from the saved step. FAKE_STEP_SECONDS sets the step time; FAKE_FAIL=1 makes it
fail with an error event at the last step. FAKE_EXIT_SECONDS keeps the process alive that long
after it has reported `stopped` (a real trainer still tears down: frees the GPU, joins workers).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.config.resolve import read_run_config
from loradeck.trainer.events import EventWriter
from loradeck.trainer.runs.files import RunFiles, write_status


def main(argv: list[str]) -> int:
    files = RunFiles(Path(argv[0]))
    resume = "--resume" in argv
    cfg, _dataset = read_run_config(files.config)
    total = cfg.max_train_steps or 10
    step_seconds = float(os.environ.get("FAKE_STEP_SECONDS", "0.05"))
    state_file = files.state / "step.txt"
    step = int(state_file.read_text()) if resume and state_file.exists() else 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    current = {"state": "running", "step": step}

    def beat():
        while True:
            write_status(files, state=current["state"], step=current["step"], total_steps=total)
            time.sleep(0.2)

    threading.Thread(target=beat, daemon=True).start()
    writer = EventWriter(files.events)
    writer.emit("run_started", run_id=files.run_id, config=cfg.to_dict(), environment={"device": "cpu"},
                total_steps=total, resumed_from=step if resume else None)
    print(f"fake trainer pid {os.getpid()} from step {step}"
          f" CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')}", flush=True)
    files.state.mkdir(exist_ok=True)
    while step < total:
        time.sleep(step_seconds)
        step += 1
        current["step"] = step
        if os.environ.get("FAKE_FAIL") and step == total:
            writer.emit("error", kind="nan", message="loss is nan", hint="lower the learning rate")
            writer.emit("run_finished", status="failed", steps_done=step, message="loss is nan")
            write_status(files, state="failed", step=step, total_steps=total)
            return 1
        writer.emit("step", step=step, total_steps=total, epoch=1, loss=1.0 / step, lr=cfg.learning_rate,
                    step_time=step_seconds)
        atomic_write_text(state_file, str(step))
        if stop.is_set():
            current["state"] = "stopped"
            writer.emit("run_finished", status="stopped", steps_done=step)
            write_status(files, state="stopped", step=step, total_steps=total)
            time.sleep(float(os.environ.get("FAKE_EXIT_SECONDS", "0")))
            return 0
    output = files.output(cfg.output_name)
    output.write_bytes(b"fake lora")
    writer.emit("run_finished", status="completed", output=str(output), steps_done=step)
    current["state"] = "completed"
    write_status(files, state="completed", step=step, total_steps=total)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
