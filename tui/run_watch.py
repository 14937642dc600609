"""Follow one training run from its files: fold events.jsonl into a view the monitor draws.

`RunTracker` is plain Python: it folds events (from `loradeck.trainer.events.EventReader`) into running
totals and series, and hands out `RunView` snapshots. `RunWatcher` runs the tracker in a worker
thread and posts one `RunUpdated` message per poll; the message declares `can_replace`, so when
the UI falls behind a burst of updates collapses to the newest (thousands of events never queue
thousands of redraws). The next poll starts only after the previous one has finished.
"""

from __future__ import annotations

import math
import os
import threading
import time
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from textual.message import Message

from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import EventReader, reading
from loradeck.trainer.runs import lifecycle as engine_runs
from loradeck.trainer.runs import queue as run_queue
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.runs.states import LIVE

# Series longer than this are thinned (every other point dropped) so memory and the cost of a
# snapshot stay bounded on very long runs; a chart is a few hundred columns wide anyway.
MAX_POINTS = 8192
SMOOTHING = 0.9  # EMA weight, as TensorBoard's default smoothing slider
LOG_TAIL_LINES = 200
LOG_TAIL_BYTES = 32 * 1024
# Catching up on a long file is done in small bites with a pause between them: parsing JSON holds
# the GIL, and the UI thread must get it often enough to answer keys promptly.
READ_CHUNK = 64 * 1024
CATCH_UP_PAUSE = 0.002  # seconds between bites
CATCH_UP_POST_EVERY = 0.1  # seconds between intermediate views while catching up
ALERTS_KEPT = 50
ETA_WINDOW = 50  # steps used for the recent rate


class Series:
    """x/y points with ascending x that thin themselves to at most MAX_POINTS (keeping every
    `stride`-th point). A point at or before the last x (a run resumed from an earlier saved
    state) first drops the points it replaces, so the graph shows the steps that count."""

    __slots__ = ("xs", "ys", "stride", "_skip")

    def __init__(self) -> None:
        self.xs: list[float] = []
        self.ys: list[float] = []
        self.stride = 1
        self._skip = 0

    def add(self, x: float, y: float) -> None:
        if self.xs and x <= self.xs[-1]:
            keep = bisect_left(self.xs, x)
            del self.xs[keep:], self.ys[keep:]
            self._skip = 0
        if self._skip:
            self._skip -= 1
            return
        self._skip = self.stride - 1
        self.xs.append(x)
        self.ys.append(y)
        if len(self.xs) > MAX_POINTS:
            self.xs = self.xs[::2]
            self.ys = self.ys[::2]
            self.stride *= 2

    def copy(self) -> tuple[list[float], list[float]]:
        return list(self.xs), list(self.ys)

    def __len__(self) -> int:
        return len(self.xs)


@dataclass(frozen=True)
class Alert:
    level: str  # "warning" or "error"
    kind: str
    message: str
    hint: str = ""
    step: int | None = None


@dataclass
class RunView:
    """What the monitor shows, copied out of the tracker (safe to hand to the UI thread)."""

    run_id: str
    state: str = "unknown"  # queued|starting|running|stopping|completed|stopped|failed|crashed|unknown
    queue_line: str | None = None  # a queued run: its place and what it waits for (loradeck.trainer.runs.queue)
    events_seen: int = 0
    started: float | None = None
    step: int = 0
    total_steps: int = 0
    epoch: int | None = None
    loss: float | None = None
    lr: float | None = None
    it_per_sec: float | None = None
    samples_per_sec: float | None = None
    eta_seconds: float | None = None
    loss_raw: tuple[list[float], list[float]] = ((), ())
    loss_smooth: tuple[list[float], list[float]] = ((), ())
    # memory in bytes against seconds since the start: torch's from steps, NVML's from gpu samples
    torch_allocated: tuple[list[float], list[float]] = ((), ())
    torch_peak: tuple[list[float], list[float]] = ((), ())
    gpu_used: tuple[list[float], list[float]] = ((), ())
    gpu_proc: tuple[list[float], list[float]] = ((), ())
    gpu_total: int | None = None
    gpu_name: str | None = None
    gpu_available: bool | None = None  # None: no gpu event yet
    gpu_reason: str | None = None
    gpu_proc_visible: bool | None = None
    gpu_util: float | None = None
    device: str | None = None  # from run_started ("cuda:0", "cpu")
    rss_peak: float | None = None  # the trainer's peak resident memory (bytes), CPU runs say this
    predicted_peak: float | None = None  # run_started's vram_estimate: expected torch peak (bytes)
    alerts: list[Alert] = field(default_factory=list)
    sample_path: str | None = None
    sample_prompt: str | None = None
    sample_step: int | None = None
    checkpoints: int = 0
    last_checkpoint: str | None = None
    last_checkpoint_step: int | None = None
    finished_status: str | None = None
    finished_message: str | None = None
    output: str | None = None
    log_tail: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    state_detail: str | None = None  # e.g. "Slurm job 1234, PENDING: Resources"

    @property
    def is_live(self) -> bool:
        return self.state in LIVE

    @property
    def progress(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0


class RunTracker:
    """Folds a run's events into the numbers and series the monitor draws."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.events_seen = 0
        self.started: float | None = None
        self.step = 0
        self.total_steps = 0
        self.epoch: int | None = None
        self.loss: float | None = None
        self.lr: float | None = None
        self.samples_per_sec: float | None = None
        self.loss_raw = Series()
        self.loss_smooth = Series()
        self._ema: float | None = None
        self.torch_allocated = Series()
        self.torch_peak = Series()
        self.gpu_used = Series()
        self.gpu_proc = Series()
        self.gpu_total: int | None = None
        self.gpu_name: str | None = None
        self.gpu_available: bool | None = None
        self.gpu_reason: str | None = None
        self.gpu_proc_visible: bool | None = None
        self.gpu_util: float | None = None
        self.device: str | None = None
        self.rss_peak: float | None = None
        self.predicted_peak: float | None = None
        self.alerts: deque[Alert] = deque(maxlen=ALERTS_KEPT)
        self.sample: tuple[str, str, int | None] | None = None
        self.checkpoints = 0
        self.last_checkpoint: str | None = None
        self.last_checkpoint_step: int | None = None
        self.finished_status: str | None = None
        self.finished_message: str | None = None
        self.output: str | None = None
        self.config: dict[str, Any] = {}
        # (step, time) of recent steps and their step_time, for it/s and ETA
        self._recent: deque[tuple[int, float]] = deque(maxlen=ETA_WINDOW)
        self._step_times: deque[float] = deque(maxlen=ETA_WINDOW)

    # -- folding -------------------------------------------------------------------------------
    def feed(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            handler = getattr(self, "_on_" + str(event.get("type")), None)
            if handler is not None:
                try:
                    handler(event)
                except (TypeError, ValueError, KeyError, AttributeError):
                    pass  # a malformed event is skipped; the monitor must keep going
            self.events_seen += 1

    def _on_run_started(self, e: dict) -> None:
        if self.started is None:
            self.started = reading(e.get("time"))
        if isinstance(e.get("config"), dict):
            self.config = e["config"]
        env = e.get("environment") if isinstance(e.get("environment"), dict) else {}
        self.device = e.get("device") or env.get("device") or env.get("gpu") or self.device
        estimate = e.get("vram_estimate") if isinstance(e.get("vram_estimate"), dict) else {}
        self.predicted_peak = reading(estimate.get("expected_peak_bytes"))
        # A resumed run starts again: its previous run_finished no longer holds.
        self.finished_status = self.finished_message = None
        self._recent.clear()

    def _on_step(self, e: dict) -> None:
        step = int(e["step"])
        t = reading(e.get("time")) or 0.0
        if self.started is None:
            self.started = t
        self.step = step
        self.total_steps = int(e.get("total_steps") or self.total_steps)
        epoch = e.get("epoch")
        self.epoch = int(epoch) if isinstance(epoch, (int, float)) else self.epoch
        self.lr = reading(e.get("lr"))
        loss = reading(e.get("loss"))
        self.loss = loss
        if loss is not None and math.isfinite(loss):
            self.loss_raw.add(step, loss)
            # EMA seeded with the first value, so early points are not dragged towards zero.
            self._ema = loss if self._ema is None else SMOOTHING * self._ema + (1 - SMOOTHING) * loss
            self.loss_smooth.add(step, self._ema)
        sps = reading(e.get("samples_per_sec"))
        if sps is not None:
            self.samples_per_sec = sps
        step_time = reading(e.get("step_time"))
        if step_time and step_time > 0:
            self._step_times.append(step_time)
        if self._recent and step <= self._recent[-1][0]:
            self._recent.clear()  # resumed from an earlier state
        self._recent.append((step, t))
        rss = reading(e.get("rss_peak"))
        if rss is not None:
            self.rss_peak = rss
        alloc, peak = reading(e.get("mem_allocated")), reading(e.get("mem_peak"))
        # Memory shares the VRAM graph's time axis (seconds since the start) with the gpu samples.
        if alloc is not None:
            self.torch_allocated.add(t - self.started, alloc)
        if peak is not None:
            self.torch_peak.add(t - self.started, peak)

    def _on_gpu(self, e: dict) -> None:
        self.gpu_available = bool(e.get("available"))
        if not self.gpu_available:
            self.gpu_reason = e.get("reason") or "no GPU visible"
            return
        self.gpu_reason = None
        self.gpu_name = e.get("name") or self.gpu_name
        t = reading(e.get("time")) or 0.0
        x = t - (self.started or t)
        total = reading(e.get("mem_total"))
        if total:
            self.gpu_total = int(total)
        used = reading(e.get("mem_used"))
        if used is not None:
            self.gpu_used.add(x, used)
        proc = reading(e.get("proc_mem"))
        self.gpu_proc_visible = proc is not None
        if proc is not None:
            self.gpu_proc.add(x, proc)
        self.gpu_util = reading(e.get("util"))

    def _on_checkpoint(self, e: dict) -> None:
        self.checkpoints += 1
        self.last_checkpoint = str(e.get("path"))
        step = e.get("step")
        self.last_checkpoint_step = int(step) if isinstance(step, int) else None

    def _on_sample(self, e: dict) -> None:
        step = e.get("step")
        self.sample = (str(e["path"]), str(e.get("prompt") or ""), int(step) if isinstance(step, int) else None)

    def _on_warning(self, e: dict) -> None:
        self.alerts.append(Alert("warning", str(e.get("kind") or "warning"), str(e.get("message", "")),
                                 str(e.get("hint") or ""), self.step or None))

    def _on_error(self, e: dict) -> None:
        self.alerts.append(Alert("error", str(e.get("kind") or "error"), str(e.get("message", "")),
                                 str(e.get("hint") or ""), self.step or None))

    def _on_run_finished(self, e: dict) -> None:
        self.finished_status = str(e.get("status"))
        self.finished_message = e.get("message")
        self.output = e.get("output") or self.output
        steps_done = e.get("steps_done")
        if isinstance(steps_done, int):
            self.step = max(self.step, steps_done)

    # -- derived numbers ------------------------------------------------------------------------
    def it_per_sec(self) -> float | None:
        """Steps per second over the recent window (wall clock between step events), else 1/step_time."""
        if len(self._recent) >= 2:
            (s0, t0), (s1, t1) = self._recent[0], self._recent[-1]
            if t1 > t0 and s1 > s0:
                return (s1 - s0) / (t1 - t0)
        if self._step_times:
            mean = sum(self._step_times) / len(self._step_times)
            return 1.0 / mean if mean > 0 else None
        return None

    def eta_seconds(self) -> float | None:
        rate = self.it_per_sec()
        if not rate or not self.total_steps or self.finished_status:
            return None
        return max(0, self.total_steps - self.step) / rate

    def view(self, state: str, log_tail: list[str]) -> RunView:
        sample = self.sample
        return RunView(
            run_id=self.run_id, state=state, events_seen=self.events_seen, started=self.started,
            step=self.step, total_steps=self.total_steps, epoch=self.epoch, loss=self.loss, lr=self.lr,
            it_per_sec=self.it_per_sec(), samples_per_sec=self.samples_per_sec,
            eta_seconds=self.eta_seconds() if state in ("running", "starting") else None,
            loss_raw=self.loss_raw.copy(), loss_smooth=self.loss_smooth.copy(),
            torch_allocated=self.torch_allocated.copy(), torch_peak=self.torch_peak.copy(),
            gpu_used=self.gpu_used.copy(), gpu_proc=self.gpu_proc.copy(), gpu_total=self.gpu_total,
            gpu_name=self.gpu_name, gpu_available=self.gpu_available, gpu_reason=self.gpu_reason,
            gpu_proc_visible=self.gpu_proc_visible, gpu_util=self.gpu_util, device=self.device, rss_peak=self.rss_peak,
            predicted_peak=self.predicted_peak,
            alerts=list(self.alerts),
            sample_path=sample[0] if sample else None, sample_prompt=sample[1] if sample else None,
            sample_step=sample[2] if sample else None,
            checkpoints=self.checkpoints, last_checkpoint=self.last_checkpoint,
            last_checkpoint_step=self.last_checkpoint_step,
            finished_status=self.finished_status, finished_message=self.finished_message,
            output=self.output, log_tail=log_tail, config=self.config,
        )


# -- reading the other run files --------------------------------------------------------------

class LogTail:
    """The last lines of train.log, re-read only when the file grew or changed."""

    def __init__(self, path: os.PathLike, lines: int = LOG_TAIL_LINES) -> None:
        self.path = path
        self.lines = lines
        self._sig: tuple[int, int] | None = None
        self._tail: list[str] = []

    def read(self) -> list[str]:
        try:
            st = os.stat(self.path)
        except OSError:
            return self._tail
        sig = (st.st_size, st.st_mtime_ns)
        if sig == self._sig:
            return self._tail
        self._sig = sig
        with open(self.path, "rb") as fh:
            fh.seek(max(0, st.st_size - LOG_TAIL_BYTES))
            text = fh.read().decode("utf-8", errors="replace")
        # Progress bars rewrite one line with \r: keep what the line finally shows.
        lines = [ln.rsplit("\r", 1)[-1] for ln in text.rstrip("\n").split("\n")]
        if st.st_size > LOG_TAIL_BYTES and lines:
            lines = lines[1:]  # the first line was probably cut
        self._tail = lines[-self.lines:]
        return self._tail


# -- the worker -------------------------------------------------------------------------------

class RunUpdated(Message):
    """A fresh view of the run; a newer one replaces an older one still waiting in the queue."""

    def __init__(self, view: RunView) -> None:
        super().__init__()
        self.view = view

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, RunUpdated)


class RunWatcher:
    """Polls one run's files in a thread and posts `RunUpdated` to `target` after each change.

    Use `run()` as a thread worker body; `poke()` makes the next poll happen now (after stop or
    resume); `stop()` ends the loop. Polls never overlap: the next waits for the previous to finish.
    """

    def __init__(self, files: RunFiles, post: Callable[[Message], Any], *, interval: float = 0.25,
                 idle_interval: float = 1.0) -> None:
        self.files = files
        self.tracker = RunTracker(files.run_id)
        self.reader = EventReader(files.events)
        self.log = LogTail(files.log)
        self._post = post
        self.interval = interval
        self.idle_interval = idle_interval
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._last_sig: tuple | None = None
        self.state = "unknown"
        self.state_detail: str | None = None
        self.polls = 0

    def poke(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def poll_once(self) -> RunView | None:
        """Fold what is new; return a view if anything the UI shows changed, else None."""
        changed = False
        last_post = time.monotonic()
        while not self._stopped.is_set():
            events = self.reader.read_new(READ_CHUNK)
            if not events:
                break
            if changed:
                time.sleep(CATCH_UP_PAUSE)  # a long backlog: let the UI thread in between bites
                if time.monotonic() - last_post > CATCH_UP_POST_EVERY:
                    # show the progress so far, so a long history fills in rather than pops in
                    self._post(RunUpdated(self.tracker.view(self.state, self.log.read())))
                    last_post = time.monotonic()
            self.tracker.feed(events)
            changed = True
        # reads events incrementally: cheap per poll (a Slurm run's squeue answer is cached a few seconds)
        self.state, self.state_detail = engine_runs.run_state_detail(self.files)
        tail = self.log.read()
        queue_line = self._queue_line() if self.state == "queued" and not self.state_detail else None
        sig = (self.state, self.state_detail, len(tail), tail[-1] if tail else None, queue_line)
        self.polls += 1
        if changed or sig != self._last_sig:
            self._last_sig = sig
            view = self.tracker.view(self.state, tail)
            view.queue_line = queue_line
            view.state_detail = self.state_detail
            return view
        return None

    def _queue_line(self) -> str:
        return run_queue.queue_line(run_queue.describe(self.files))

    def run(self) -> None:
        """The worker body: poll, post, wait; until `stop()`."""
        while not self._stopped.is_set():
            try:
                view = self.poll_once()
            except (OSError, LoradeckError):
                view = None  # a file mid-replace, a disk hiccup: the next poll tries again
            if view is not None and not self._stopped.is_set():
                self._post(RunUpdated(view))
            live = self.state in LIVE
            self._wake.wait(self.interval if live else self.idle_interval)
            self._wake.clear()
