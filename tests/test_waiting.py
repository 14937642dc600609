"""The suite's wait helper: returns what it waited for, or fails naming it."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.waiting import wait_until, wait_until_async


def test_returns_the_first_truthy_value():
    counter = itertools.count()
    assert wait_until(lambda: next(counter) >= 3 and "ready", timeout=5, interval=0.001) == "ready"


def test_a_timeout_names_what_was_awaited_and_describes_the_state():
    with pytest.raises(AssertionError, match=r"timed out after 0.05 s waiting for the run to finish\nstate: queued"):
        wait_until(lambda: False, timeout=0.05, interval=0.01, message="the run to finish",
                   describe=lambda: "state: queued")


def test_a_failing_description_does_not_hide_the_timeout():
    def describe() -> str:
        raise OSError("gone")

    with pytest.raises(AssertionError, match="waiting for x\n\\(could not describe the state: OSError"):
        wait_until(lambda: None, timeout=0.01, interval=0.01, message="x", describe=describe)


def test_the_async_variant_lets_the_app_run_between_looks():
    class Pilot:
        pauses = 0

        async def pause(self, delay=None):
            self.pauses += 1
            await asyncio.sleep(0)

    pilot = Pilot()
    assert asyncio.run(wait_until_async(pilot, lambda: pilot.pauses >= 2 and pilot.pauses)) == 2
    with pytest.raises(AssertionError, match="waiting for the screen"):
        asyncio.run(wait_until_async(pilot, lambda: False, timeout=0.01, message="the screen"))
