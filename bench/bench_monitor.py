"""Does the monitor stay responsive while a run's events.jsonl grows fast?

A writer process (standing in for the trainer: its command line names the run, it beats
status.json) appends N step/gpu events as fast as it can (or at --rate events/s) while the monitor
screen follows the file in a headless Textual app. Meanwhile the benchmark presses a key every
--interval seconds and records the time from the press to the key's handler running on the UI
thread. Reports key latency (idle baseline and under load), how long the monitor needed to show the
last event after the writer finished, and how many screen updates it applied.

    python bench/bench_monitor.py [--events 10000] [--rate 0] [--presses 200] [--history 0]

`--history N` first writes N events before the monitor opens (re-attach to a long run) and reports
the time to the first view and to the full history.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from textual import events  # noqa: E402
from textual.app import App  # noqa: E402
from textual.binding import Binding  # noqa: E402

from loradeck.trainer.dataset.project import create_project  # noqa: E402
from loradeck.trainer.events import dumps  # noqa: E402
from loradeck.trainer.runs.files import RunFiles  # noqa: E402
from loradeck.tui.screens.monitor import MonitorScreen  # noqa: E402

WRITER = r"""
import json, os, sys, time
run_dir, n, rate, start = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
events, status = os.path.join(run_dir, "events.jsonl"), os.path.join(run_dir, "status.json")
def beat():
    tmp = status + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"pid": os.getpid(), "heartbeat": time.time(), "state": "running"}, fh)
    os.replace(tmp, status)
beat()
sys.stdin.readline()  # go
t0 = last_beat = time.time()
total = start + n
with open(events, "a") as fh:
    for i in range(start, total):
        now = time.time()
        if i % 20 == 0:
            line = {"type": "gpu", "time": now, "available": True, "name": "bench GPU", "mem_used": 4e9 + i,
                    "mem_total": 12e9, "proc_mem": 3e9, "util": 99}
        else:
            line = {"type": "step", "time": now, "step": i, "total_steps": total, "epoch": 1 + i // 1000,
                    "loss": 1.0 / (1 + i * 1e-3), "lr": 1e-4, "step_time": 0.01, "mem_allocated": 2e9,
                    "mem_peak": 3e9}
        fh.write(json.dumps(line) + "\n")
        fh.flush()  # one write per event, as loradeck.trainer.events.EventWriter does
        if rate:
            delay = t0 + (i - start + 1) / rate - time.time()
            if delay > 0:
                time.sleep(delay)
        if now - last_beat > 0.5:
            beat(); last_beat = now
beat()
print(time.time(), flush=True)
sys.stdin.readline()  # stay 'running' until told to exit
"""


class BenchApp(App):
    """Hosts the monitor; `x` records when its handler ran."""

    BINDINGS = [Binding("x", "mark", "mark", priority=True)]

    def __init__(self, project, run_id: str) -> None:
        super().__init__()
        self.project, self.run_id = project, run_id
        self.marks: list[float] = []

    def on_mount(self) -> None:
        self.push_screen(MonitorScreen(self.project, self.run_id))

    def action_mark(self) -> None:
        self.marks.append(time.perf_counter())


def history_events(n: int) -> str:
    t = time.time() - n * 0.01
    lines = []
    for i in range(1, n + 1):
        lines.append(dumps({"type": "step", "time": t + i * 0.01, "step": i, "total_steps": n, "epoch": 1,
                            "loss": 1.0 / i, "lr": 1e-4, "step_time": 0.01}))
    return "\n".join(lines) + "\n" if lines else ""


async def press_loop(pilot, app: BenchApp, presses: int, interval: float, stop_when=None) -> list[float]:
    """Send key `x` as the terminal driver does (not Pilot.press, which also waits for the app to
    go idle) and time it until the handler runs."""
    latencies = []
    for _ in range(presses):
        before = len(app.marks)
        t0 = time.perf_counter()
        key = events.Key("x", "x")
        key.set_sender(app)
        app._driver.send_message(key)
        while len(app.marks) == before:
            await asyncio.sleep(0.0005)
        latencies.append(app.marks[-1] - t0)
        if stop_when is not None and stop_when():
            break
        await asyncio.sleep(interval)
    return latencies


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "no samples"
    ms = sorted(x * 1000 for x in latencies)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"n={len(ms)} p50={statistics.median(ms):.1f} ms p95={p95:.1f} ms max={ms[-1]:.1f} ms"


async def bench(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="bench-monitor-"))
    project = create_project("bench", root)
    files = RunFiles(project.run_dir("20260101-000000-bench"))
    files.dir.mkdir(parents=True)
    files.config.write_text('base_model = "synthetic:tiny"\n')
    started = {"type": "run_started", "time": time.time(), "run_id": files.run_id, "config": {},
               "environment": {"device": "cuda:0"}}
    files.events.write_text(dumps(started) + "\n" + history_events(args.history))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, "loradeck.trainer.train.process", str(files.dir),
                               str(args.events), str(args.rate), str(args.history + 1)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    result: dict = {"events": args.events, "rate": args.rate or "as fast as possible", "history": args.history}
    app = BenchApp(project, files.run_id)
    t_open = time.perf_counter()
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            screen = app.screen
            while screen.view is None:
                await asyncio.sleep(0.001)
            result["first_view_s"] = round(time.perf_counter() - t_open, 3)
            while screen.view.step < args.history:
                await asyncio.sleep(0.005)
            result["history_loaded_s"] = round(time.perf_counter() - t_open, 3)
            idle = await press_loop(pilot, app, 30, args.interval)
            updates_before = screen.updates_applied
            last_step = args.history + args.events - 1
            shown: list[float] = []
            writer_done: list[float] = []

            async def watch() -> None:
                while screen.view.step < last_step:
                    await asyncio.sleep(0.002)
                shown.append(time.time())

            watcher = asyncio.create_task(watch())
            writer.stdin.write("go\n")
            writer.stdin.flush()
            t_go = time.perf_counter()
            reader = asyncio.get_running_loop().run_in_executor(
                None, lambda: writer_done.append(float(writer.stdout.readline())))
            loaded = await press_loop(pilot, app, args.presses, args.interval, stop_when=lambda: bool(shown))
            await watcher
            await reader
            result.update({
                "writer_seconds": round(writer_done[0] - (time.time() - (time.perf_counter() - t_go)), 2),
                "key_latency_idle": summary(idle),
                "key_latency_under_load": summary(loaded),
                "shown_last_event_after_writer_s": round(max(0.0, shown[0] - writer_done[0]), 3),
                "screen_updates": screen.updates_applied - updates_before,
                "events_seen": screen.view.events_seen,
            })
    finally:
        writer.stdin.close()
        writer.wait(timeout=10)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=0, help="events per second (0: as fast as possible)")
    parser.add_argument("--presses", type=int, default=2000, help="at most this many presses under load")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between key presses")
    parser.add_argument("--history", type=int, default=0, help="events already in the file at open")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args)), indent=2))


if __name__ == "__main__":
    main()
