"""The TUI's warm estimator child (loradeck.tui.estimator): one child answers every question, a question
asked meanwhile overtakes the one before, a child that left is started again, and closing ends it at once."""

from __future__ import annotations

import os
import signal
import threading

from loradeck.tui.estimator import Estimator, service_argv
from tests.waiting import wait_until

TINY = {"base_model": "synthetic:tiny", "resolution": 64, "batch_size": 1}


def test_one_child_answers_every_question_and_a_newer_question_overtakes_an_older_one():
    estimator = Estimator()
    try:
        estimator.start()
        first = estimator.ask(TINY)
        assert first["ok"] is True and first["config"]["batch_size"] == 1
        pid = estimator.pid
        answers: dict[str, object] = {}
        older = threading.Thread(target=lambda: answers.update(older=estimator.ask(dict(TINY, batch_size=2))))
        older.start()
        wait_until(lambda: estimator._asked == 2, timeout=10, message="the older question")
        newer = estimator.ask(dict(TINY, batch_size=3))
        older.join(60)
        assert answers["older"] is None  # overtaken: its caller drops it
        assert newer["ok"] is True and newer["config"]["batch_size"] == 3
        assert estimator.pid == pid and estimator.starts == 1 and estimator.ready
        bad = estimator.ask(dict(TINY, resolution=-5))
        assert bad["ok"] is False and "resolution" in bad["error"]
    finally:
        estimator.close()
    assert estimator.pid is None


def test_a_child_that_left_is_started_again():
    """Gone for any reason (its idle time, tested in tests/trainer_engine/test_estimate_service.py, or a
    kill from outside): the next question starts a new child and is answered."""
    estimator = Estimator()
    try:
        assert estimator.ask(TINY)["ok"] is True
        os.kill(estimator.pid, signal.SIGKILL)
        wait_until(lambda: estimator.pid is None, timeout=30, message="the killed child to go")
        assert estimator.ask(TINY)["ok"] is True and estimator.starts == 2
    finally:
        estimator.close()


def test_closing_ends_a_child_that_is_still_importing_its_libraries():
    """Leaving the form or quitting must not wait for a warm-up: the child is ended at once."""
    estimator = Estimator()
    estimator.start()
    pid = estimator.pid
    estimator.close()  # the child is still importing torch: it would read stdin's end only after that
    assert estimator.pid is None

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, timeout=30, message="the child to be ended and reaped")
