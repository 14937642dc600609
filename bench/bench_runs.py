"""How fast `loradeck.trainer.runs.lifecycle` lists runs and reads a run's state when events files are long.

Writes RUNS synthetic runs into a temporary project, each with an events file of STEPS step events
and as many gpu events (a long run: one of each per second), then times `list_runs` on a cold
cache (first call in the process) and warm (the TUI's periodic refresh), and `run_state` of one
run after a few more events were appended.

    python bench/bench_runs.py [--runs 30] [--steps 20000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from loradeck.trainer.config import resolve as run_config  # noqa: E402
from loradeck.trainer.dataset.project import create_project  # noqa: E402
from loradeck.trainer.events import EventWriter  # noqa: E402
from loradeck.trainer.runs import lifecycle as runs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--steps", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = create_project("bench", tmp, base_model="synthetic:tiny")
        Image.new("RGB", (64, 64)).save(project.dataset / "a.png")
        (project.dataset / "a.txt").write_text("a")
        resolved = run_config.resolve(project, {"max_train_steps": args.steps, "resolution": 64})
        for _ in range(args.runs):
            files = runs.create_run_from(project, run_config.resolve(project, {"max_train_steps": args.steps,
                                                                               "resolution": 64}))
            writer = EventWriter(files.events)
            writer.emit("run_started", run_id=files.run_id, config=resolved.config.to_dict(), environment={})
            for i in range(1, args.steps + 1):
                writer.emit("step", step=i, total_steps=args.steps, epoch=1, loss=0.1, lr=1e-4, step_time=0.5)
                writer.emit("gpu", available=True, index=0, mem_used=i, mem_total=10**10, proc_mem=i, util=90)
            writer.emit("run_finished", status="completed")
            writer.close()
        size = sum(f.events.stat().st_size for f in runs.run_folders(project))
        t0 = time.perf_counter()
        infos = runs.list_runs(project)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        runs.list_runs(project)
        warm = time.perf_counter() - t0
        writer = EventWriter(infos[-1].files.events)
        for i in range(10):
            writer.emit("gpu", available=True, index=0, mem_used=i)
        writer.close()
        t0 = time.perf_counter()
        state = runs.run_state(infos[-1].files)
        append = time.perf_counter() - t0
        print(json.dumps({"runs": len(infos), "events_mb": round(size / 1e6, 1), "list_cold_s": round(cold, 3),
                          "list_warm_s": round(warm, 3), "state_after_append_ms": round(append * 1000, 2),
                          "state": state}))


if __name__ == "__main__":
    main()
