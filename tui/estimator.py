"""The TUI's estimator child (loradeck.trainer.gpu.estimate_service), kept warm between questions.

The estimate needs torch, which the TUI never imports, and a fresh process pays seconds of library
imports before it can trace; one child answers every question of a session instead. It starts on the
first use (the train form starts it when it opens, so the imports run while the user reads the form),
is started again if it died or left after its idle time, and ends when the app closes it (or, if the
app dies, at the end of its stdin).

`ask` blocks (call it from a worker thread): the answer, or None when a newer question overtook it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

from loradeck.trainer import children

SERVICE_MODULE = "loradeck.trainer.gpu.estimate_service"


def service_argv() -> list[str]:
    return [sys.executable, "-m", SERVICE_MODULE]


class Estimator:
    def __init__(self, argv: list[str] | None = None):
        self.argv = argv or service_argv()
        self._proc: subprocess.Popen | None = None
        self._changed = threading.Condition()
        self._answer: dict[str, Any] | None = None  # the answer to the newest question
        self._asked = 0  # the newest question's id
        self.starts = 0  # children started (a test counts them)
        self.ready = False  # the current child has imported its libraries

    def start(self) -> None:
        """Start the child now, if none is running (its warm-up then overlaps whatever comes next)."""
        with self._changed:
            self._running()

    def ask(self, config: dict[str, Any]) -> dict[str, Any] | None:
        """The estimate of `config` (a TrainConfig as a dict): {"ok": true, ...} or {"ok": false, "error"};
        None if another question was asked meanwhile."""
        with self._changed:
            self._asked += 1
            qid = self._asked
            self._changed.notify_all()  # the question waiting before this one is overtaken
        for _ in range(2):  # a child that had just left (idle, killed) is started once more
            with self._changed:
                if self._asked != qid:
                    return None
                proc = self._running()
                try:
                    proc.stdin.write(json.dumps({"id": qid, "config": config}) + "\n")
                    proc.stdin.flush()
                except (BrokenPipeError, OSError, ValueError):
                    proc.wait()
                    continue
                self._changed.wait_for(lambda child=proc: self._asked != qid or self._answered(qid)
                                       or child.poll() is not None)
                if self._asked != qid:
                    return None
                if self._answered(qid):
                    answer, self._answer = self._answer, None
                    return answer
        code = proc.poll()
        return {"ok": False, "error": f"the estimator stopped (exit status {code})"}

    def _answered(self, qid: int) -> bool:
        return self._answer is not None and self._answer.get("id") == qid

    def close(self) -> None:
        """End the child now (it holds nothing worth keeping); never blocks the caller, often the UI thread."""
        with self._changed:
            proc, self._proc = self._proc, None
            self._asked += 1  # wakes any waiting question, which returns None
            self._changed.notify_all()
        if proc is None:
            return
        for end in (proc.stdin.close, proc.kill):
            try:
                end()
            except OSError:
                pass
        threading.Thread(target=proc.wait, name="estimator-reap", daemon=True).start()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _running(self) -> subprocess.Popen:
        """The live child, started if there is none (call with the condition held)."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = children.start(self.argv, detached=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace")
            self.starts += 1
            self.ready = False
            threading.Thread(target=self._read, args=(self._proc,), name="estimator-answers", daemon=True).start()
        return self._proc

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            with self._changed:
                if message.get("ready") and proc is self._proc:
                    self.ready = True
                elif message.get("id") == self._asked:  # older answers were overtaken
                    self._answer = message
                self._changed.notify_all()
        proc.wait()
        with self._changed:
            self._changed.notify_all()  # a question waiting on this child sees it gone
