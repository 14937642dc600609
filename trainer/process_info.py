"""Other processes, read through psutil: their argv, liveness, start time, owner and path arguments.

Used by trainer.runs.lifecycle (is the run's process alive, which processes are its ranks), trainer.gpu.monitor
and loradeck.trainer.gpu.processes (which GPU processes belong to a run, who owns each) and loradeck.trainer.runs.queue
(is a waiter alive). Every function answers None (or False) where the process is gone or cannot be
read, never raises: another user's process may hide its details.
"""

from __future__ import annotations

import os
from typing import Iterator

import psutil

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied, OSError)


def _process(pid: int) -> psutil.Process | None:
    try:
        return psutil.Process(pid)
    except _GONE:
        return None


def argv(pid: int) -> list[str] | None:
    """The process's argv (empty while it is still inside execve); None if unreadable."""
    proc = _process(pid)
    if proc is None:
        return None
    try:
        return proc.cmdline()
    except _GONE:
        return None


def running(pid: int) -> bool | None:
    """True for a live process, False for none or a zombie; None where psutil cannot tell."""
    proc = _process(pid)
    if proc is None:
        return False if not psutil.pid_exists(pid) else None
    try:
        return proc.status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except (psutil.AccessDenied, OSError):
        return None


def start_time(pid: int) -> float | None:
    """When process `pid` started (Unix seconds)."""
    proc = _process(pid)
    try:
        return proc.create_time() if proc is not None else None
    except _GONE:
        return None


def user(pid: int) -> str | None:
    """The name of the user who owns the process (the uid as text when it has no name)."""
    proc = _process(pid)
    if proc is None:
        return None
    try:
        return proc.username()
    except KeyError:  # a uid with no passwd entry (containers)
        try:
            return str(proc.uids().real)
        except _GONE:
            return None
    except _GONE:
        return None


def command(pid: int) -> str | None:
    """A one-line command for display: the argv joined, else the process name."""
    args = argv(pid)
    if args:
        return " ".join(args)
    proc = _process(pid)
    try:
        return proc.name() if proc is not None else None
    except _GONE:
        return None


def all_pids() -> Iterator[int]:
    return iter(psutil.pids())


def path_arg(pid: int, arg: str) -> str | None:
    """A path argument of process `pid`, resolved (real path) against that process's working folder."""
    if os.path.isabs(arg):
        return os.path.realpath(arg)
    proc = _process(pid)
    try:
        return os.path.realpath(os.path.join(proc.cwd(), arg)) if proc is not None else None
    except _GONE:
        return None


def module_arg(pid: int, module: str) -> str | None:
    """For `... -m MODULE PATH ...`, PATH resolved as `path_arg` does; None for other processes."""
    args = argv(pid) or []
    if module not in args or args.index(module) + 1 >= len(args):
        return None
    return path_arg(pid, args[args.index(module) + 1])
