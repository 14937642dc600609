"""A stand-in for `python -m loradeck.trainer.train.process RUN_DIR [--resume]` that only speaks the protocol:
heartbeats in status.json, step events, SIGTERM -> run_finished(stopped). Used to drive stop/resume
through the real launcher (loradeck.trainer.runs.lifecycle) without training anything.

    python fake_trainer.py loradeck.trainer.train.process RUN_DIR [--resume] [--steps N] [--step-seconds S]
"""

import signal
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from loradeck.trainer.events import EventWriter, read_all  # noqa: E402
from loradeck.trainer.runs.files import RunFiles, write_status  # noqa: E402

args = sys.argv[1:]
run_dir = Path(args[1])
resume = "--resume" in args
steps = int(args[args.index("--steps") + 1]) if "--steps" in args else 1000
step_seconds = float(args[args.index("--step-seconds") + 1]) if "--step-seconds" in args else 0.05
files = RunFiles(run_dir)
writer = EventWriter(files.events)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())

done = 0
if resume:
    done = max([e["step"] for e in read_all(files.events) if e["type"] == "step"] or [0])
writer.emit("run_started", run_id=files.run_id, config={"max_train_steps": steps},
            environment={"device": "cpu"}, resumed_from=done if resume else None)
state = {"step": done}


finished = threading.Event()


def beat():
    while not finished.is_set():
        write_status(files, state="running", step=state["step"], total_steps=steps)
        time.sleep(0.2)


beater = threading.Thread(target=beat, daemon=True)
beater.start()
print(f"fake trainer in {run_dir} from step {done}", flush=True)
while state["step"] < steps and not stop.is_set():
    time.sleep(step_seconds)
    state["step"] += 1
    writer.emit("step", step=state["step"], total_steps=steps, epoch=1, loss=1.0 / state["step"], lr=1e-4,
                step_time=step_seconds)
    print(f"step {state['step']}", flush=True)
status = "stopped" if stop.is_set() else "completed"
finished.set()
beater.join()
writer.emit("run_finished", status=status, steps_done=state["step"])
write_status(files, state=status, step=state["step"], total_steps=steps)
print(f"fake trainer {status}", flush=True)
writer.close()
