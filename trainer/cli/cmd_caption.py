"""CLI command: caption (BLIP auto-captioning; see trainer/cli/__init__.py for the conventions).

    loradeck caption NAME [--tagger blip|wd14] [--model M] [--batch-size N] [--prefix TEXT] [--suffix TEXT]
                          [--overwrite | --policy skip|overwrite|append]
                          [--beams N | --sample [--top-p X] [--temperature X]] [--min-length N]
                          [--max-length N] [--prompt TEXT] [--seed N] [--device D] [--events]

People get a Rich progress bar on stderr. `--events` writes the task events (loradeck.trainer.events) as JSON
lines on stdout instead, for the TUI, which runs this as a subprocess and never imports torch.
Ctrl-C or SIGTERM stop after the current batch (a second one stops at once); what was captioned
stays captioned, and running the command again carries on.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading

from loradeck.trainer.captions.blip_captioning import DEFAULT_BATCH_CPU, DEFAULT_BATCH_CUDA, CaptionOptions
from loradeck.trainer.captions.blip_model import DEFAULT_MODEL
from loradeck.trainer.cli import CommandResult, caption_tagger
from loradeck.trainer.errors import ConfigError, StopRequested

# The engine's defaults are the CLI's defaults (one place for each).
_DEFAULTS = CaptionOptions()


def register(sub, parent) -> None:
    """Add this area's subcommands to `sub` (argparse subparsers); `parent` has --root/--json."""
    p = sub.add_parser(
        "caption", parents=[parent], help="caption dataset images with BLIP (or WD14 tags: --tagger wd14)",
        description="Write a caption for every dataset image that has none, with a BLIP captioning model, "
                    "or booru tags with a WD14 ONNX tagger (--tagger wd14; docs/captioning.md). "
                    "Ctrl-C stops after the current batch; run it again to carry on.")
    p.add_argument("name", help="project name")
    p.add_argument("--model", default=None,
                   help="Hugging Face id, local folder, or synthetic:blip-tiny (default: project.toml [caption] model,"
                        f" else {DEFAULT_MODEL}; synthetic:blip-tiny for a project on a synthetic base model);"
                        " with --tagger wd14 a folder with model.onnx + selected_tags.csv or an HF id"
                        " (default: [tagger] model)")
    p.add_argument("--device", default=_DEFAULTS.device, help="auto (default: CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"images per batch (default {DEFAULT_BATCH_CUDA} on a GPU, {DEFAULT_BATCH_CPU} on a CPU;"
                        " halved automatically on out-of-memory)")
    p.add_argument("--overwrite", action="store_true", help="recaption images that already have a caption")
    p.add_argument("--prefix", default=None,
                   help="text put before each new caption, once (default: the project's trigger word)")
    p.add_argument("--suffix", default="", help="text put after each new caption, once")
    p.add_argument("--no-trigger", action="store_true",
                   help="do not prepend the project's trigger word when --prefix is not given")
    decode = p.add_mutually_exclusive_group()
    decode.add_argument("--beams", type=int, default=None,
                        help=f"beam search width, 1 = greedy (default {_DEFAULTS.beams})")
    decode.add_argument("--sample", action="store_true", help="nucleus sampling instead of beam search")
    p.add_argument("--top-p", type=float, default=None,
                   help=f"nucleus sampling top-p (default {_DEFAULTS.top_p}; with --sample)")
    p.add_argument("--temperature", type=float, default=None,
                   help=f"sampling temperature (default {_DEFAULTS.temperature}; with --sample)")
    p.add_argument("--min-length", type=int, default=None,
                   help=f"minimum caption length in tokens (default {_DEFAULTS.min_length})")
    p.add_argument("--max-length", type=int, default=None,
                   help=f"maximum caption length in tokens (default {_DEFAULTS.max_length})")
    p.add_argument("--prompt", default="",
                   help='conditional captioning: the caption continues this text, e.g. "a picture of" '
                        "(the prompt itself is not written)")
    p.add_argument("--seed", type=int, default=None, help="random seed (makes --sample repeatable)")
    p.add_argument("--workers", type=int, default=0, help="image decoding threads (default min(4, CPUs))")
    p.add_argument("--events", action="store_true",
                   help="write progress as JSON-line task events on stdout (for the TUI) instead of a bar")
    caption_tagger.add_arguments(p)
    p.set_defaults(handler=_caption)


def _options(args: argparse.Namespace) -> CaptionOptions:
    if not args.sample and (args.top_p is not None or args.temperature is not None):
        raise ConfigError("--top-p and --temperature only apply with --sample")
    return CaptionOptions(
        model=args.model or _DEFAULTS.model, device=args.device, batch_size=args.batch_size,
        overwrite=args.overwrite or args.policy == "overwrite", prefix=args.prefix, suffix=args.suffix,
        use_trigger_word=not args.no_trigger, beams=_DEFAULTS.beams if args.beams is None else args.beams,
        sample=args.sample, top_p=_DEFAULTS.top_p if args.top_p is None else args.top_p,
        temperature=_DEFAULTS.temperature if args.temperature is None else args.temperature,
        min_length=_DEFAULTS.min_length if args.min_length is None else args.min_length,
        max_length=_DEFAULTS.max_length if args.max_length is None else args.max_length,
        prompt=args.prompt, seed=args.seed,
        workers=args.workers)


def _caption(args: argparse.Namespace) -> CommandResult:
    from loradeck.trainer.captions.blip_captioning import caption_project
    from loradeck.trainer.dataset.project import open_project

    caption_tagger.check_flags(args)
    if args.tagger == "wd14":
        return caption_tagger.run(args)
    project = open_project(args.name, args.root)
    options = _options(args)
    options.validate()  # before the signal handlers and the bar, so a bad value is just an error line
    with StopOnSignal() as stopper, _event_sink(args) as sink:
        report = caption_project(project, options, on_event=sink, should_stop=stopper.is_set,
                                 interruptible=stopper.interrupting)
    code = 128 + stopper.signum if report.stopped and stopper.signum else 0
    if args.events:  # stdout carries events only; the summary is for the person watching stderr
        print(_summary(report), file=sys.stderr)
        return CommandResult(report.to_dict(), "", code)
    return CommandResult(report.to_dict(), _summary(report), code)


def _summary(report) -> str:
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
def _event_sink(args: argparse.Namespace):
    """`--events`: JSON lines on stdout. Otherwise: a Rich progress bar and warnings on stderr."""
    if args.events:
        from loradeck.trainer.events import EventWriter, ProgressEcho

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
        from rich.console import Console
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
