"""`loradeck caption --tagger wd14`: the WD14 booru tagger beside BLIP (loradeck.trainer.captions.wd14_tagging).

The flags here are added to `loradeck caption` (trainer/cli/cmd_caption.py), which hands over to
`run` when `--tagger wd14` is given. Thresholds, rating, underscores, exclusions and order default to
the project's [tagger] table in project.toml; flags override them for one run.
"""

from __future__ import annotations

import argparse
import sys

from loradeck.trainer.captions.tag_policy import ORDERS, POLICIES
from loradeck.trainer.captions.wd14_tagging import TagOptions, tag_project
from loradeck.trainer.cli import CommandResult
from loradeck.trainer.cli.caption_progress import StopOnSignal, event_sink, summary
from loradeck.trainer.dataset.project import open_project
from loradeck.trainer.errors import ConfigError

TAGGERS = ("blip", "wd14")
# BLIP's generation flags: (dest, the value that means "not given").
_BLIP_ONLY = (("beams", None), ("sample", False), ("top_p", None), ("temperature", None),
              ("min_length", None), ("max_length", None), ("prompt", ""), ("seed", None))
_TAGGER_ONLY = ("general_threshold", "character_threshold", "rating", "underscores", "exclude", "order")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tagger", choices=TAGGERS, default="blip",
                   help="blip: sentences (default); wd14: booru tags from a WD14 ONNX tagger")
    p.add_argument("--policy", choices=POLICIES, default=None,
                   help="images that already have a caption: skip them (default), overwrite them, or (wd14)"
                        " append the tags they do not have yet")
    g = p.add_argument_group("wd14 tagger (defaults: [tagger] in project.toml)")
    g.add_argument("--general-threshold", type=float, default=None, metavar="X",
                   help="minimum probability of a general tag (default 0.35)")
    g.add_argument("--character-threshold", type=float, default=None, metavar="X",
                   help="minimum probability of a character tag (default 0.85)")
    g.add_argument("--rating", action=argparse.BooleanOptionalAction, default=None,
                   help="add the most likely rating tag (general, sensitive, ...) at the end (default off)")
    g.add_argument("--underscores", action=argparse.BooleanOptionalAction, default=None,
                   help="keep booru underscores (long_hair) instead of spaces (long hair; the default)")
    g.add_argument("--exclude", action="append", default=None, metavar="TAGS",
                   help="comma-separated tags never written (repeatable; adds to [tagger] exclude)")
    g.add_argument("--order", choices=ORDERS, default=None,
                   help="character tags first, then general tags, each by confidence (default); or all"
                        " by confidence")


def check_flags(args: argparse.Namespace) -> None:
    """Refuse flags that do not apply to the chosen captioner (a silently ignored flag is a trap)."""
    if args.overwrite and args.policy not in (None, "overwrite"):
        raise ConfigError(f"--overwrite contradicts --policy {args.policy}")
    if args.tagger == "wd14":
        given = [d for d, unset in _BLIP_ONLY if getattr(args, d, unset) != unset]
        if given:
            raise ConfigError(f"--{given[0].replace('_', '-')} applies to BLIP only, not to --tagger wd14")
        return
    given = [d for d in _TAGGER_ONLY if getattr(args, d, None) is not None]
    if given:
        raise ConfigError(f"--{given[0].replace('_', '-')} applies to --tagger wd14 only")
    if args.policy == "append":
        raise ConfigError("--policy append adds tags, so it needs --tagger wd14",
                          hint="BLIP captions are sentences: use --policy skip or overwrite")


def options(args: argparse.Namespace):
    exclude = [t.strip() for item in (args.exclude or []) for t in item.split(",") if t.strip()]
    return TagOptions(
        model=args.model, device=args.device, batch_size=args.batch_size,
        policy="overwrite" if args.overwrite else (args.policy or "skip"), prefix=args.prefix,
        suffix=args.suffix, use_trigger_word=not args.no_trigger, general_threshold=args.general_threshold,
        character_threshold=args.character_threshold, include_rating=args.rating,
        replace_underscores=None if args.underscores is None else not args.underscores,
        exclude=exclude or None, order=args.order, workers=args.workers)


def run(args: argparse.Namespace) -> CommandResult:
    project = open_project(args.name, args.root)
    opts = options(args)
    opts.validate()  # before the signal handlers and the bar, so a bad value is just an error line
    with StopOnSignal() as stopper, event_sink(args) as sink:
        report = tag_project(project, opts, on_event=sink, should_stop=stopper.is_set)
    code = 128 + stopper.signum if report.stopped and stopper.signum else 0
    text = summary(report).replace("captioned ", "tagged ", 1)
    if report.unchanged:
        text += f"\n{len(report.unchanged)} caption(s) already had every tag: unchanged"
    if args.events:
        print(text, file=sys.stderr)
        return CommandResult(report.to_dict(), "", code)
    return CommandResult(report.to_dict(), text, code)
