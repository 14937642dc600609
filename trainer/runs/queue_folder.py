"""The run queue's folder and a queued run's place in it, read without starting anything.

loradeck.trainer.runs.queue puts runs in the queue and starts them; this module only knows the
folder (its tickets, its lock, whose waiter is alive) and describes a queued run's place, so the
run listing (loradeck.trainer.runs.lifecycle) can say what a queued run waits for.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from loradeck.trainer import process_info
from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.cli_hint import command
from loradeck.trainer.runs.files import RunFiles

QUEUE_ENV = "LORADECK_QUEUE"
DIR_MODE = 0o3775       # setgid (the group is inherited) + sticky (only owners remove) + group-writable
FILE_MODE = 0o644       # readable by the group; only its owner writes it
BEAT_STALE = 60.0


# ----------------------------------------------------------------------------------- the folder

def queue_dir(root: str | os.PathLike) -> Path:
    """The queue folder of a projects root: `$LORADECK_QUEUE`, else `<root>/.queue`."""
    env = os.environ.get(QUEUE_ENV, "").strip()
    return Path(env).expanduser().absolute() if env else Path(root).absolute() / ".queue"


def ensure_dir(qdir: Path) -> Path:
    """Create the queue folder (and its parts) with the shared modes; existing ones are left as
    they are unless we own them (another user's chmod is not ours to do)."""
    for d in (qdir, qdir / "waiting", qdir / "running"):
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(PermissionError):
                os.chmod(d, DIR_MODE)
    return qdir


@contextlib.contextmanager
def locked(qdir: Path) -> Iterator[None]:
    """Hold the queue's exclusive lock (flock: released by the kernel if the holder dies)."""
    lock = qdir / "queue.lock"
    try:
        fd = os.open(lock, os.O_RDONLY | os.O_CREAT, FILE_MODE)
    except PermissionError:
        fd = os.open(lock, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass
class Ticket:
    path: Path
    data: dict[str, Any]

    @property
    def run_label(self) -> str:
        return f"{self.data.get('project')}/{self.data.get('run_id')}"


def read_json(path: Path) -> dict[str, Any] | None:
    """A ticket or queue.json as a dict; None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace a ticket or queue.json atomically, readable by the group."""
    atomic_write_text(path, json.dumps(data), perms=FILE_MODE)


def tickets_in(folder: Path) -> list[Ticket]:
    """The readable tickets in waiting/ or running/, in arrival order."""
    try:
        names = sorted(p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith("."))
    except OSError:
        return []
    found = []
    for path in names:
        data = read_json(path)
        if data is not None:
            found.append(Ticket(path, data))
    return found


def this_host() -> str:
    return socket.gethostname()


def waiter_alive(data: dict[str, Any]) -> bool:
    """Is the ticket's waiter process alive? This machine: by pid and start time; another: by beat."""
    waiter = data.get("waiter") or {}
    if waiter.get("host") != this_host():
        beat = data.get("beat")
        return isinstance(beat, (int, float)) and time.time() - beat < BEAT_STALE
    pid = waiter.get("pid")
    if not isinstance(pid, int) or process_info.running(pid) is False:
        return False
    begun, recorded = process_info.start_time(pid), waiter.get("start")
    return not (begun and isinstance(recorded, (int, float)) and abs(begun - recorded) > 1.0)


def queue_of_host(qdir: Path) -> list[Ticket]:
    """This machine's live queue, in order: tickets whose waiter is alive (an orphan holds no place)."""
    return [t for t in tickets_in(qdir / "waiting") if t.data.get("host") == this_host() and waiter_alive(t.data)]


def read_queue_record(files: RunFiles) -> dict[str, Any] | None:
    return read_json(files.queue)


# ------------------------------------------------------------------------------------- reading

def describe(files: RunFiles) -> dict[str, Any] | None:
    """A queued run's place: {place, of, waits_for, orphaned, gpu, need, user}; None if never queued.

    `place` is 1 for the head; an orphan (its waiter is gone, e.g. killed) has no place."""
    record = read_queue_record(files)
    if record is None:
        return None
    ticket = Path(record.get("ticket", ""))
    data = read_json(ticket) if record.get("ticket") else None
    info: dict[str, Any] = {"gpu": record.get("gpu"), "need": record.get("need"), "place": None, "of": None,
                            "orphaned": False, "waits_for": None, "ticket": str(ticket)}
    project = files.dir.parent.parent.name
    requeue = f"requeue it: {command('requeue', project, files.run_id)}"
    if data is None:
        info.update(orphaned=True, waits_for=f"its queue ticket is gone; {requeue}")
        return info
    if not waiter_alive(data):
        info.update(orphaned=True, waits_for=f"its waiter process is gone (killed?); {requeue}")
        return info
    line = queue_of_host(Path(record["queue_dir"]))
    names = [t.path.name for t in line]
    if ticket.name in names:
        place = names.index(ticket.name) + 1
        info.update(place=place, of=len(line))
        if place == 1:
            info["waits_for"] = data.get("waiting") or "its first look at the free GPU memory"
        else:
            head = line[0]
            info["waits_for"] = (f"{place - 1} queued run(s) ahead; first: {head.run_label}"
                                 f" ({head.data.get('user')})")
    return info


def queue_line(info: dict[str, Any] | None) -> str:
    """One line for people: `queued 2/3: waits for ...` or the orphan's hint."""
    if not info:
        return "queued"
    if info.get("orphaned"):
        return f"queued but orphaned: {info.get('waits_for')}"
    place = f" {info['place']}/{info['of']}" if info.get("place") else ""
    return f"queued{place}: waits for {info.get('waits_for') or 'its turn'}"
