"""The `loradeck` command line (headless part). May import: the whole engine (every package).

Each area registers its subcommands from its own module (`register(subparsers)`), so areas can grow
independently. A handler takes the parsed args and returns either an int exit code or a result
object; `--json` prints the result as one JSON object, otherwise `human` text is printed.
Failures raise LoradeckError, which becomes `error: <one line>` on stderr and exit status 1; so do
an OSError nobody caught (disk full, permission denied) and a usage error (exit status 2). A reader
that goes away (`loradeck captions list x | head`) ends the command quietly.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Callable, Sequence

from loradeck.trainer import __version__
from loradeck.trainer.errors import LoradeckError

# Order is the order of `loradeck --help`.
COMMAND_MODULES = (
    "loradeck.trainer.cli.cmd_projects",   # init, projects, delete, repair
    "loradeck.trainer.cli.cmd_dataset",    # import, prep, check
    "loradeck.trainer.cli.cmd_captions",   # captions (list/set/trigger/replace/tags/metadata)
    "loradeck.trainer.cli.cmd_caption",    # caption (BLIP, or WD14 tags)
    "loradeck.trainer.cli.cmd_train",      # train, runs, stop, resume
    "loradeck.trainer.cli.cmd_queue",      # gpus, cancel, requeue (and train/resume --gpu/--queue)
    "loradeck.trainer.cli.cmd_estimate",   # estimate
    "loradeck.trainer.cli.cmd_export",     # export, validate, convert, pack, shared
    "loradeck.trainer.cli.cmd_samples",    # samples (grid listing, contact sheet)
)


class CommandResult:
    """What a handler returns: `data` for --json, `text` for people, `code` for the exit status."""

    def __init__(self, data: dict, text: str = "", code: int = 0):
        self.data, self.text, self.code = data, text, code


class UsageError(SystemExit):
    """A command line argparse refuses; main() reports it like every other failure (exit status 2).
    A SystemExit(2), as argparse's own, for code that parses without main()."""

    def __init__(self, message: str):
        super().__init__(2)
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (`error: ...`), like every other failure; under --json
    main() also prints them as the one JSON object."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see: {self.prog} --help)")


def common_parent() -> argparse.ArgumentParser:
    """Options every subcommand accepts (so they work before or after the subcommand name)."""
    p = _Parser(add_help=False)
    p.add_argument("--root", default=argparse.SUPPRESS, help="projects root (default $LORADECK_ROOT or ./projects)")
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON object")
    return p


def build_parser(extra: Sequence[Callable] = ()) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="loradeck", description="Train Stable Diffusion LoRA adapters from the terminal.",
        parents=[common_parent()])
    parser.add_argument("--version", action="version", version=f"loradeck {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    parent = common_parent()
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub, parent)
    for register in extra:
        register(sub, parent)
    return parser


def _emit(result, as_json: bool) -> int:
    if isinstance(result, int) or result is None:
        return result or 0
    if as_json:
        print(json.dumps(result.data, ensure_ascii=False, default=str))
    elif result.text:
        print(result.text)
    return result.code


def main(argv: Sequence[str] | None = None, *, extra: Sequence[Callable] = (),
         default: Callable | None = None) -> int:
    """Run the CLI. `extra` registers more subcommands; `default` runs when no command is given."""
    parser = build_parser(extra)
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        options = argv[:argv.index("--")] if "--" in argv else argv
        if "--json" in options:
            print(json.dumps({"ok": False, "error": e.message}))
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    args.root = getattr(args, "root", None)
    args.json = getattr(args, "json", False)
    handler = getattr(args, "handler", None)
    if handler is None:
        if default is not None:
            return default(args) or 0
        parser.print_help()
        return 0
    try:
        return _emit(handler(args), args.json)
    except BrokenPipeError:
        return _reader_gone()
    except (LoradeckError, OSError) as e:
        line = e.one_line() if isinstance(e, LoradeckError) else _os_error_line(e)
        try:
            if args.json:
                print(json.dumps({"ok": False, "error": line}))
            print(f"error: {line}", file=sys.stderr)
        except BrokenPipeError:
            return _reader_gone()
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _os_error_line(e: OSError) -> str:
    """`cannot write /x/y: No space left on device` from any OSError."""
    what = e.strerror or str(e) or type(e).__name__
    name = e.filename if e.filename is not None else None
    return f"{what}: {name}" if name is not None else what


def _reader_gone() -> int:
    """stdout's reader exited (`| head`): stop quietly, as Unix tools do, without a traceback at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the interpreter's final flush must not fail again
    except (OSError, ValueError, AttributeError):  # no real file behind stdout
        pass
    return 141  # 128 + SIGPIPE, what the shell reports for a tool killed by the closed pipe
