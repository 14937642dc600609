"""The `loradeck` console script: no command opens the TUI, subcommands are the engine's CLI.

Kept free of textual and torch imports so `loradeck --help` and CLI commands start fast; the TUI
is imported only when a TUI command runs.
"""

from __future__ import annotations

import sys
from typing import Sequence


def _register_tui_commands(sub, parent) -> None:
    p = sub.add_parser("demo", parents=[parent], help="create a demo project, then open the TUI")
    p.add_argument("--no-tui", action="store_true", help="only create the demo project")
    p.set_defaults(handler=_run_demo)
    p = sub.add_parser("monitor", parents=[parent], help="open the live monitor of a run")
    p.add_argument("name")
    p.add_argument("run", nargs="?")
    p.set_defaults(handler=_run_monitor)


def _run_tui(args) -> int:
    from tui.app import run_app

    return run_app(root=args.root)


def _run_demo(args) -> int:
    from tui.app import run_demo

    return run_demo(root=args.root, open_tui=not args.no_tui)


def _run_monitor(args) -> int:
    from tui.app import run_monitor

    return run_monitor(root=args.root, project=args.name, run=args.run)


def main(argv: Sequence[str] | None = None) -> int:
    from trainer.cli import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv, extra=[_register_tui_commands], default=_run_tui)
