"""Reading other processes from Linux's /proc: their argv, state fields, start time and path arguments.

Used by trainer.runs (is the run's process alive, which processes are its ranks) and
trainer.gpu_monitor (which GPU processes belong to the run). Every function returns None where
/proc cannot tell (no such process, no /proc).
"""

from __future__ import annotations

import os
from pathlib import Path


def argv(pid: int) -> list[str] | None:
    """The process's argv (empty while it is still inside execve); None if unreadable."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.decode(errors="replace").split("\0")[:-1] if raw else []


def stat(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return raw[raw.rindex(")") + 2:].split()


def boot_time() -> float | None:
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def start_time(pid: int) -> float | None:
    """When process `pid` started (Unix seconds)."""
    fields, boot = stat(pid), boot_time()
    if not fields or boot is None:
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def path_arg(pid: int, arg: str) -> str | None:
    """A path argument of process `pid`, resolved (real path) against that process's working folder."""
    try:
        return os.path.realpath(os.path.join(os.readlink(f"/proc/{pid}/cwd"), arg))
    except OSError:
        return os.path.realpath(arg) if os.path.isabs(arg) else None


def module_arg(pid: int, module: str) -> str | None:
    """For `... -m MODULE PATH ...`, PATH resolved as `path_arg` does; None for other processes."""
    args = argv(pid) or []
    if module not in args or args.index(module) + 1 >= len(args):
        return None
    return path_arg(pid, args[args.index(module) + 1])
