"""Heavy dataset work (prep, BLIP captioning) as a subprocess that prints JSON task events.

The TUI never imports torch: it starts `python -m loradeck.trainer <command> NAME --root R --events`, reads
one event per stdout line (loradeck.trainer.events.parse_line), and cancels with SIGTERM, which the engine
turns into a clean stop (finished items kept, `task_finished` with status `stopped`).
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
from typing import Callable, Iterator

from loradeck.trainer import children
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import parse_line


def task_argv(command: str, project: Project, *extra: str) -> list[str]:
    """The command line of an engine task with JSON events on stdout."""
    return children.module_argv("loradeck.trainer", command, project.name, "--root", str(project.root),
                                "--events", *extra)


class TaskProcess:
    """One running engine subprocess: iterate `events()`, `cancel()` from any thread."""

    def __init__(self, argv: list[str]):
        self.argv = argv
        self.cancelled = False
        self._stderr = tempfile.TemporaryFile(mode="w+b")
        self.proc = children.start(argv, detached=True, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=1,
                                   text=True, encoding="utf-8", errors="replace")

    def events(self) -> Iterator[dict]:
        """Parsed events until the process closes stdout; corrupt lines are skipped."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = parse_line(line)
            if event is not None:
                yield event

    def cancel(self) -> None:
        """Ask the task to stop after its current item (SIGTERM)."""
        self.cancelled = True
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass

    def wait(self) -> int:
        code = self.proc.wait()
        return code

    def error_text(self) -> str:
        """The last meaningful stderr line (the engine prints `error: <one line>`)."""
        self._stderr.seek(0)
        lines = [ln.strip() for ln in self._stderr.read().decode("utf-8", "replace").splitlines()
                 if ln.strip()]
        for ln in reversed(lines):
            if ln.startswith("error:"):
                return ln[len("error:"):].strip()
        return lines[-1] if lines else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self._stderr.close()


def run_task(argv: list[str], on_event: Callable[[dict], None],
             on_start: Callable[[TaskProcess], None] | None = None) -> tuple[str, list[dict], dict]:
    """Run a task to its end (in a worker thread): returns (status, failed items, final event).

    A task that exits non-zero without being cancelled raises LoradeckError with its error line.
    """
    task = TaskProcess(argv)
    if on_start:
        on_start(task)
    failures: list[dict] = []
    final: dict = {}
    try:
        for event in task.events():
            if event.get("type") == "item_failed":
                failures.append(event)
            elif event.get("type") == "task_finished":
                final = event
            on_event(event)
        code = task.wait()
        if code != 0 and not task.cancelled and final.get("status") != "stopped":
            raise LoradeckError(f"{argv[3]} failed: {task.error_text() or f'exit status {code}'}")
    finally:
        task.close()
    status = final.get("status") or ("stopped" if task.cancelled else "completed")
    return status, failures, final
