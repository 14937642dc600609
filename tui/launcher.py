"""The `loradeck` console script: no command opens the TUI, subcommands are the engine's CLI.

Kept free of textual and torch imports so `loradeck --help` and CLI commands start fast; the TUI
is imported only when a TUI command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from loradeck.trainer.cli import main as cli_main
from loradeck.trainer.dataset.project import open_project


def _register_tui_commands(sub, parent) -> None:
    p = sub.add_parser("demo", parents=[parent], help="create a demo project, then open the TUI")
    p.add_argument("--no-tui", action="store_true", help="only create the demo project")
    p.set_defaults(handler=_run_demo)
    p = sub.add_parser("monitor", parents=[parent], help="open the live monitor of a run",
                       description="The TUI's live monitor of a run. Without a terminal (a script, a pipe) or"
                                   " with --json it prints the run's progress until the run ends instead,"
                                   " and exits 0 completed, 2 stopped, 1 failed or crashed.")
    p.add_argument("name")
    p.add_argument("run", nargs="?", help="run id, a unique prefix of it, or 'latest' (default: the"
                                          " project's one active run, else its newest)")
    p.set_defaults(handler=_run_monitor)


def _run_tui(args) -> int:
    from loradeck.tui.app import run_app  # Textual: only once the TUI opens (see above)

    return run_app(root=args.root)


def _run_demo(args) -> int:
    from loradeck.tui.app import run_demo  # Textual: only once the TUI opens

    return run_demo(root=args.root, open_tui=not args.no_tui)


def _run_monitor(args):
    # This command's own modules, loaded when it runs: the bare TUI call skips them.
    from loradeck.trainer.runs import choice as run_choice

    project = open_project(args.name, args.root)
    files, why = run_choice.choose_run(project, args.run, "monitor")
    run_choice.says_which(files, why)
    if args.json:
        from loradeck.trainer.cli.cmd_train import watch  # one JSON object with the run's outcome, at its end

        result = watch(project, files, quiet=True)
        result.data["chosen"] = why
        return result
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        from loradeck.trainer.cli import plain_monitor  # no terminal to draw on: plain lines until the run ends

        try:
            return plain_monitor.follow(files, lambda line: print(line, flush=True))
        except KeyboardInterrupt:
            return 130
    from loradeck.tui.app import run_monitor  # Textual: only once the TUI opens

    return run_monitor(root=args.root, project=args.name, run=files.run_id)


def _bare_tui_root(argv: Sequence[str]) -> str | None | bool:
    """The --root of a bare `loradeck [--root DIR]`, or False for anything else.

    A bare call opens the TUI without building the CLI parser, which imports every command module:
    that is most of the TUI's start-up time budget on a slow machine.
    """
    if not argv:
        return None
    if len(argv) == 2 and argv[0] == "--root" and not argv[1].startswith("-"):
        return argv[1]
    if len(argv) == 1 and argv[0].startswith("--root=") and len(argv[0]) > 7:
        return argv[0][7:]
    return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    root = _bare_tui_root(args)
    if root is not False:
        return _run_tui(argparse.Namespace(root=root)) or 0
    return cli_main(args, extra=[_register_tui_commands], default=_run_tui)
