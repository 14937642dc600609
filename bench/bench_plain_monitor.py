"""CPU used by `loradeck monitor` without a terminal (trainer/cli/plain_monitor.py) while a run goes on.

Starts a protocol-only fake trainer (tests/runs/fake_trainer.py: real process, real events.jsonl and
status.json, a step every --step-seconds), then `python -m loradeck.tui monitor` with stdin/stdout not a TTY,
and reports the monitor's CPU seconds (utime + stime from /proc) over --seconds of wall time. A
monitor that spins would report about 100 %.

    python bench/bench_plain_monitor.py [--seconds 10] [--step-seconds 0.2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--step-seconds", type=float, default=0.2)
    args = parser.parse_args()

    from loradeck.trainer.dataset.project import create_project
    from loradeck.trainer.runs import lifecycle as runs
    from tests.runs.conftest import write_images

    runs.TRAIN_MODULE = "tests.runs.fake_trainer"
    os.environ["FAKE_STEP_SECONDS"] = str(args.step_seconds)
    root = Path(tempfile.mkdtemp(prefix="bench-plain-monitor-"))
    project = create_project("qa cats", root, base_model="synthetic:tiny")
    write_images(project.dataset)
    files = runs.create_run(project, {"max_train_steps": 100_000, "resolution": 64})
    runs.start(files)
    time.sleep(3)
    env = dict(os.environ, PYTHONPATH=str(REPO), LORADECK_ROOT=str(root))
    monitor = subprocess.Popen([sys.executable, "-m", "loradeck.tui", "monitor", "qa cats", files.run_id],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env, cwd=REPO)
    try:
        time.sleep(5)  # past its start-up (imports) and the history replay
        c0, t0 = cpu_seconds(monitor.pid), time.monotonic()
        time.sleep(args.seconds)
        used, wall = cpu_seconds(monitor.pid) - c0, time.monotonic() - t0
        print(f"plain monitor: {used:.2f} s CPU in {wall:.1f} s wall ({100 * used / wall:.1f} %),"
              f" run stepping every {args.step_seconds} s")
    finally:
        runs.stop(files, timeout=30, force=True)
        print(f"monitor exit status: {monitor.wait(timeout=30)}")


if __name__ == "__main__":
    main()
