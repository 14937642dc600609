"""Child processes: one command form and one environment rule for every process loradeck starts.

A child is this interpreter running `-m loradeck.<module>`, so it imports loradeck from exactly where
this process did (the installed package, editable or not; never a PYTHONPATH guess). Its environment
is ours plus PYTHONUNBUFFERED, so logs and event pipes are live. Detached children (the trainer, a
queue waiter) get their own session, so a stop signals their whole process group and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, Mapping


def module_argv(module: str, *args: str, python: str | None = None) -> list[str]:
    """`python -m module args...` with this interpreter (or `python`)."""
    return [python or sys.executable, "-m", module, *args]


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The one environment rule: ours, unbuffered, plus `extra`."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start(argv: list[str], *, detached: bool = False, **popen: Any) -> subprocess.Popen:
    """Popen with the rule's environment, stdin from /dev/null unless given, and (detached) its own session."""
    popen.setdefault("stdin", subprocess.DEVNULL)
    popen.setdefault("close_fds", True)
    popen["env"] = child_env(popen.get("env"))
    return subprocess.Popen(argv, start_new_session=detached or popen.pop("start_new_session", False), **popen)


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    """subprocess.run with the rule's environment."""
    kwargs["env"] = child_env(kwargs.get("env"))
    kwargs.setdefault("stdin", subprocess.DEVNULL) if "input" not in kwargs else None
    return subprocess.run(argv, **kwargs)
