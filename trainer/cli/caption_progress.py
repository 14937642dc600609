"""What `loradeck caption` shows while it works, for both captioners (BLIP in cmd_caption.py, WD14 in
caption_tagger.py): the stop-on-signal handling, the event sink (JSON lines or a Rich bar) and the summary.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from loradeck.trainer.errors import StopRequested
from loradeck.trainer.events import EventWriter, ProgressEcho


def summary(report) -> str:
    lines = [f"captioned {len(report.captioned)} of {report.total} images in {report.project!r}"
             f" ({len(report.skipped)} already captioned, {len(report.failed)} failed)"]
    lines += [f"  failed {name}: {why}" for name, why in report.failed.items()]
    if report.stopped:
        left = report.total - len(report.skipped) - len(report.captioned) - len(report.failed)
        lines.append(f"stopped with {left} left: run the same command again to carry on")
    return "\n".join(lines)


class StopOnSignal:
    """While active, the first SIGINT/SIGTERM asks the run to stop after the current batch; a second
    one gets the default behaviour (Ctrl-C raises KeyboardInterrupt, SIGTERM ends the process).
    Inside `interrupting()` (the model load) the first one raises StopRequested at once instead."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self._event = threading.Event()
        self.signum: int | None = None
        self._previous: dict[int, object] = {}
        self._raise = False

    def is_set(self) -> bool:
        return self._event.is_set()

    def _handle(self, signum, _frame) -> None:
        self.signum = signum
        self._event.set()
        for s in self.SIGNALS:  # the next signal is not ignored
            signal.signal(s, signal.default_int_handler if s == signal.SIGINT else signal.SIG_DFL)
        if self._raise:
            print("stopping", file=sys.stderr, flush=True)
            raise StopRequested()
        print("stopping after the current batch (press Ctrl-C again to stop at once)", file=sys.stderr,
              flush=True)

    @contextlib.contextmanager
    def interrupting(self):
        """While inside, a stop request (or one already made) raises StopRequested at once."""
        if self._event.is_set():
            raise StopRequested()
        self._raise = True
        try:
            yield
        finally:
            self._raise = False

    def __enter__(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def event_sink(args: argparse.Namespace):
    """`--events`: JSON lines on stdout. Otherwise: a Rich progress bar and warnings on stderr."""
    if args.events:
        writer = EventWriter(None, echo=ProgressEcho(sys.stdout))
        try:
            yield writer.emit
        finally:
            writer.close()
        return
    with _RichProgress() as bar:
        yield bar.on_event


class _RichProgress:
    """Turns task events into a Rich progress bar on stderr (stdout stays clean for --json)."""

    def __enter__(self) -> "_RichProgress":
        from rich.console import Console  # rich: off `loradeck --help`, whose parser imports every command module
        from rich.markup import escape
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.escape = escape
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=self.console)
        self.task = None
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def on_event(self, type_: str, **fields) -> None:
        if type_ == "task_started":
            self.task = self.progress.add_task("captioning", total=fields["total"] or None, rate="")
            if fields.get("skipped"):
                self.console.print(f"{fields['skipped']} images already captioned: skipped")
        elif type_ == "progress" and self.task is not None:
            rate = f"{fields['images_per_sec']:.1f} img/s" if fields.get("images_per_sec") else ""
            self.progress.update(self.task, completed=fields["done"], rate=rate,
                                 description=fields.get("message") or "captioning")
        elif type_ == "item_failed":
            self.console.print(f"[yellow]skipped {self.escape(fields['item'])}[/]: {self.escape(fields['reason'])}",
                               highlight=False)
        elif type_ == "task_finished" and fields["status"] == "failed" and self.task is not None:
            self.progress.remove_task(self.task)  # the error line says it all; no stale bar above it
            self.task = None
        elif type_ == "warning":
            self.console.print(f"[yellow]warning[/]: {self.escape(fields['message'])}", highlight=False)
