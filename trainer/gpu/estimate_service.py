"""A long-lived estimator: `python -m loradeck.trainer.gpu.estimate_service`, for the train form.

A cold estimate spends most of its time importing torch, diffusers, transformers and peft (measured in
docs/benchmarks.md: more than the trace itself). The train form asks again on every knob change, so it
keeps one of these children instead of starting a fresh process per question. Lines of JSON:

    child  -> {"ready": true, "seconds": S}            libraries imported, one tiny trace warmed up
    parent -> {"id": N, "config": {TrainConfig}}       one question
    child  -> {"id": N, "ok": true, ...Estimate}       or {"id": N, "ok": false, "error": "one line"}

Only the newest waiting question is answered: questions that arrived while a trace ran were overtaken by
the last one. The child exits at the end of its stdin (the parent closed it or died) and after
IDLE_SECONDS without a question, so a forgotten one gives its memory back to a shared box.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from loradeck.trainer.config import train_config
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.gpu import vram_estimate

IDLE_SECONDS = 900.0
# A trace of the smallest model imports what every trace needs (decompositions, peft's layers) up front.
WARM_UP = {"base_model": "synthetic:tiny", "resolution": 64, "batch_size": 1}


class Questions:
    """The newest question read from a stream, and whether the stream has ended (a reader thread fills it)."""

    def __init__(self, stream):
        self._stream = stream
        self._newest: dict[str, Any] | None = None
        self._ended = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, name="estimate-questions", daemon=True).start()

    def _read(self) -> None:
        for line in self._stream:
            try:
                question = json.loads(line)
            except ValueError:
                question = {"id": None, "bad": line.strip()[:80]}
            if not isinstance(question, dict):
                question = {"id": None, "bad": line.strip()[:80]}
            with self._changed:
                self._newest = question
                self._changed.notify()
        with self._changed:
            self._ended = True
            self._changed.notify()

    def next(self, timeout: float) -> dict[str, Any] | None:
        """The newest unanswered question; None when the stream ended or `timeout` passed without one."""
        with self._changed:
            self._changed.wait_for(lambda: self._newest is not None or self._ended, timeout=timeout)
            question, self._newest = self._newest, None
            return question


def answer(question: dict[str, Any]) -> dict[str, Any]:
    qid = question.get("id")
    if "bad" in question:
        return {"id": qid, "ok": False, "error": f"not a JSON object: {question['bad']!r}"}
    try:
        cfg = train_config.from_mapping(question.get("config") or {}, source="the train form")
        return {"id": qid, "ok": True, **vram_estimate.estimate(cfg).to_dict()}
    except (LoradeckError, ValueError) as e:
        return {"id": qid, "ok": False, "error": e.one_line() if isinstance(e, LoradeckError) else str(e)}


def warm_up() -> None:
    """Import the libraries and trace the smallest model once (its answer is thrown away)."""
    vram_estimate.estimate(train_config.from_mapping(WARM_UP, source="warm-up"))


def serve(stdin=None, stdout=None, *, idle_seconds: float = IDLE_SECONDS) -> int:
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    started = time.perf_counter()
    warm_up()
    _say(stdout, {"ready": True, "seconds": round(time.perf_counter() - started, 3)})
    questions = Questions(stdin)
    while True:
        question = questions.next(idle_seconds)
        if question is None:  # stdin ended, or nobody asked for idle_seconds
            return 0
        _say(stdout, answer(question))


def _say(stdout, message: dict[str, Any]) -> None:
    stdout.write(json.dumps(message) + "\n")
    stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loradeck.trainer.gpu.estimate_service",
                                     description="answer VRAM-estimate questions (JSON lines) until stdin ends")
    parser.add_argument("--idle-seconds", type=float, default=IDLE_SECONDS,
                        help="leave after this long without a question (default %(default)s)")
    args = parser.parse_args(argv)
    from diffusers.utils import logging as diffusers_logging  # diffusers: the child traces with it anyway

    diffusers_logging.set_verbosity_error()
    return serve(idle_seconds=args.idle_seconds)


if __name__ == "__main__":
    raise SystemExit(main())
