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
import sys

from loradeck.trainer.captions.blip_captioning import (
    DEFAULT_BATCH_CPU,
    DEFAULT_BATCH_CUDA,
    CaptionOptions,
    caption_project,
)
from loradeck.trainer.captions.blip_model import DEFAULT_MODEL
from loradeck.trainer.cli import CommandResult, caption_tagger
from loradeck.trainer.cli.caption_progress import StopOnSignal, event_sink, summary
from loradeck.trainer.dataset.project import open_project
from loradeck.trainer.errors import ConfigError

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
    caption_tagger.check_flags(args)
    if args.tagger == "wd14":
        return caption_tagger.run(args)
    project = open_project(args.name, args.root)
    options = _options(args)
    options.validate()  # before the signal handlers and the bar, so a bad value is just an error line
    with StopOnSignal() as stopper, event_sink(args) as sink:
        report = caption_project(project, options, on_event=sink, should_stop=stopper.is_set,
                                 interruptible=stopper.interrupting)
    code = 128 + stopper.signum if report.stopped and stopper.signum else 0
    if args.events:  # stdout carries events only; the summary is for the person watching stderr
        print(summary(report), file=sys.stderr)
        return CommandResult(report.to_dict(), "", code)
    return CommandResult(report.to_dict(), summary(report), code)
