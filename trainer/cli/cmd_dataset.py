"""CLI commands: import, prep, check (see trainer/cli/__init__.py for the conventions).

`import` and `prep` are long tasks. With `--events` they print task events (loradeck.trainer.events:
task_started, progress, item_failed, task_finished) as JSON lines on stdout, for the TUI that runs
them as subprocesses (the summary is then the `report` of task_finished, and nothing else is
printed on stdout); otherwise a progress bar goes to stderr when it is a terminal. Ctrl-C or
SIGTERM stops cleanly: no new file is started, finished work is kept, the exit status is 130.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from loradeck.trainer.cli import CommandResult
from loradeck.trainer.config import resolve as run_config
from loradeck.trainer.dataset import preflight
from loradeck.trainer.dataset.formats import import_sources
from loradeck.trainer.dataset.prep import prep_project
from loradeck.trainer.dataset.project import open_project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import EventWriter, ProgressEcho


def register(sub, parent) -> None:
    p = sub.add_parser("import", parents=[parent], help="copy images (files or folders) into a project",
                       description="Copy images into a project with their captions. A PATH may also be a Hugging"
                                   " Face imagefolder (metadata.jsonl / metadata.csv) or a kohya dataset config"
                                   " TOML ([[datasets]] / [[datasets.subsets]]), imported with captions and repeats.")
    p.add_argument("name")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--caption-column", metavar="COLUMN",
                   help="imagefolder metadata column holding the captions (default: text, caption or prompt)")
    p.add_argument("--events", action="store_true", help="print task events as JSON lines (for the TUI)")
    p.set_defaults(handler=cmd_import)

    p = sub.add_parser("prep", parents=[parent], help="prepare training images (buckets) from originals")
    p.add_argument("name")
    p.add_argument("--resolution", type=int, help="training resolution in px (default: [prep] resolution)")
    p.add_argument("--workers", type=int, help="processes to use (default: one per core)")
    p.add_argument("--force", action="store_true", help="redo every image, even unchanged ones")
    p.add_argument("--events", action="store_true", help="print task events as JSON lines (for the TUI)")
    p.set_defaults(handler=cmd_prep)

    p = sub.add_parser("check", parents=[parent], help="preflight report of a project's dataset")
    p.add_argument("name")
    p.add_argument("--resolution", type=int, help="check against this resolution (default: the run config)")
    p.set_defaults(handler=cmd_check)


class StopFlag:
    """SIGINT/SIGTERM ask the task to stop after the current item; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum, _frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class TaskOutput:
    """Progress of one task: JSON-line events on stdout (`events`) or a Rich bar on stderr."""

    def __init__(self, task: str, *, events: bool, label: str, **start_fields: Any) -> None:
        self.task, self.label, self.start_fields = task, label, start_fields
        self.writer = None
        self.progress = self.bar = None
        self.started = False
        if events:
            self.writer = EventWriter(None, echo=ProgressEcho(sys.stdout))
        elif sys.stderr.isatty():
            from rich.console import Console  # rich: off `loradeck --help`, whose parser imports every command module
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), TextColumn("{task.fields[item]}"),
                                     console=Console(stderr=True), transient=True)

    def __enter__(self) -> "TaskOutput":
        if self.progress:
            self.progress.start()
        return self

    def _emit(self, type_: str, **fields: Any) -> None:
        try:
            self.writer.emit(type_, **fields)
        except (BrokenPipeError, ValueError, OSError):
            # The reader went away (the TUI closed): keep working, stop reporting.
            self.writer = None
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())

    def start(self, total: int) -> None:
        if self.started:
            return
        self.started = True
        if self.writer:
            self._emit("task_started", task=self.task, total=total, **self.start_fields)
        if self.progress:
            self.bar = self.progress.add_task(self.label, total=total, item="")

    def __call__(self, done: int, total: int, item: str, problem: str | None) -> None:
        """The on_progress callback of importer/prep."""
        self.start(total)
        if done == 0:
            return
        if self.writer:
            if problem:
                self._emit("item_failed", task=self.task, item=item, reason=problem)
        if self.writer:
            self._emit("progress", task=self.task, done=done, total=total, item=item)
        if self.progress and self.bar is not None:
            self.progress.update(self.bar, completed=done, total=total, item=item[:40])

    def finish(self, status: str, report: dict, message: str | None = None) -> None:
        self.start(0)
        if self.writer:
            extra = {"message": message} if message else {}
            self._emit("task_finished", task=self.task, status=status, report=report, **extra)

    def __exit__(self, exc_type, exc, _tb) -> None:
        if self.progress:
            self.progress.stop()
        if exc is not None and not isinstance(exc, KeyboardInterrupt):
            # The task itself failed (bad settings, disk full): tell the reader before the CLI's error line.
            text = exc.one_line() if isinstance(exc, LoradeckError) else f"{type(exc).__name__}: {exc}"
            self.finish("failed", {"ok": False, "error": text}, text)


def _status(stopped: bool) -> str:
    return "stopped" if stopped else "completed"


def _finish(args, out: TaskOutput, stopped: bool, data: dict, text: str, code: int) -> CommandResult | int:
    out.finish(_status(stopped), data)
    if stopped:
        print("stopped: finished work was kept", file=sys.stderr)
        code = 130
    if args.events:
        return code
    return CommandResult(data, text, code)


def cmd_import(args) -> CommandResult | int:
    project = open_project(args.name, args.root)
    with StopFlag() as stop, TaskOutput("import", events=args.events, label="importing",
                                        project=project.name) as out:
        report = import_sources(project, args.paths, caption_column=args.caption_column, on_progress=out,
                                should_stop=stop)
    data = {"ok": True, "project": project.name, **report.to_dict()}
    lines = [f"imported {len(report.imported)} file(s) into {project.name}/originals:"
             f" {len(report.duplicates)} duplicate(s) skipped, {len(report.refused)} refused,"
             f" {len(report.renamed)} renamed, {len(report.captions_imported)} caption(s)"]
    lines += [f"dataset  {note}" for note in report.notes]
    lines += [f"refused  {path}: {why}" for path, why in report.refused]
    lines += [f"duplicate {path} = originals/{existing}" for path, existing in report.duplicates]
    lines += [f"renamed  {path} -> originals/{new}" for path, new in report.renamed]
    lines += [f"caption kept {path}: {why}" for path, why in report.captions_skipped]
    lines += [f"kohya folder {folder}: its images are seen {n} time{'s' if n != 1 else ''} per epoch"
              " ([train] repeats multiplies)" for folder, n in report.repeat_folders.items()]
    code = 0
    if report.refused and not report.imported and not report.duplicates:
        data["ok"] = False
        print(f"error: nothing imported ({len(report.refused)} file(s) refused)", file=sys.stderr)
        code = 1
    elif not (report.imported or report.duplicates or report.captions_imported or report.stopped):
        # An empty folder (or only hidden files/links): most likely the wrong path.
        data["ok"] = False
        print(f"error: no files to import found in {', '.join(args.paths)}", file=sys.stderr)
        code = 1
    return _finish(args, out, report.stopped, data, "\n".join(lines), code)


def cmd_prep(args) -> CommandResult | int:
    project = open_project(args.name, args.root)
    with StopFlag() as stop, TaskOutput("prep", events=args.events, label="preparing",
                                        project=project.name) as out:
        report = prep_project(project, resolution=args.resolution, workers=args.workers, on_progress=out,
                              should_stop=stop, force=args.force)
    data = {"ok": not report.failed, "project": project.name, **report.to_dict()}
    lines = [f"prepared {len(report.prepared)} image(s) at {report.resolution} px in {report.seconds:.1f}s"
             f" ({report.skipped} up to date, {len(report.failed)} failed, {len(report.removed)} removed,"
             f" {report.workers} worker(s))"]
    if report.buckets:
        lines.append("buckets: " + ", ".join(f"{b} x{n}" for b, n in report.buckets.items()))
    if report.small:
        lines.append(f"{len(report.small)} image(s) smaller than a {report.resolution} px bucket"
                     " (not upscaled; see loradeck check)")
    lines += [f"failed   {name}: {why}" for name, why in report.failed]
    lines += [f"removed  dataset/{name} (its original is gone)" for name in report.removed]
    code = 0
    if report.failed:
        print(f"error: {len(report.failed)} image(s) could not be prepared", file=sys.stderr)
        code = 1
    return _finish(args, out, report.stopped, data, "\n".join(lines), code)


def cmd_check(args) -> CommandResult:
    project = open_project(args.name, args.root)
    config = None
    if args.resolution is not None:  # 0 is refused by the config rules, not taken as "default"
        config = run_config.resolve(project, {"resolution": args.resolution}).config
    report = preflight.check(project, config)
    return CommandResult(report, preflight.render(report), 0 if report["ok"] else 1)
