"""CLI commands: train (see trainer/cli/__init__.py for the conventions)."""

from __future__ import annotations


def register(sub, parent) -> None:
    """Add this area's subcommands to `sub` (argparse subparsers); `parent` has --root/--json."""
