"""The suite's one way to wait for something: poll a predicate until it holds, or fail saying what was awaited.

`wait_until` for plain tests (processes, files, CLI calls); `wait_until_async` inside a Textual Pilot test, which
lets the app run (workers, timers, subprocess readers) between looks. Both return the predicate's first truthy
value, so a test can wait for and take a thing in one line."""

from __future__ import annotations

import time
from typing import Any, Callable


def _timed_out(message: str, timeout: float, describe: Callable[[], str] | None) -> AssertionError:
    detail = ""
    if describe is not None:
        try:
            detail = f"\n{describe()}"
        except Exception as exc:  # the description must not hide the timeout
            detail = f"\n(could not describe the state: {exc!r})"
    return AssertionError(f"timed out after {timeout:g} s waiting for {message}{detail}")


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05,
               message: str = "condition", describe: Callable[[], str] | None = None) -> Any:
    """Call `predicate()` every `interval` seconds until it returns something truthy, and return that.

    After `timeout` seconds raise AssertionError naming `message`, plus `describe()` (e.g. a log tail) if given.
    The predicate is always tried once more at the deadline, so a slow machine never fails a test that just made it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(message, timeout, describe)
        time.sleep(interval)


async def wait_until_async(pilot, predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05,
                           message: str = "condition", describe: Callable[[], str] | None = None) -> Any:
    """`wait_until` for Pilot tests: the app runs (`pilot.pause(interval)`) between looks."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(message, timeout, describe)
        await pilot.pause(interval)
