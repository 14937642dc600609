"""The load check says which phase it is in, and a cancel stops it (in a child process or in this one)."""

from __future__ import annotations

import pytest

from loradeck.trainer.children import Cancelled
from loradeck.trainer.lora.validate import LOAD_PHASES, check_loads, validate


def _phases(events) -> list[str]:
    return [e["message"] for e in events if e["type"] == "progress" and e["task"] == "validate"]


def test_an_isolated_load_check_reports_each_phase_then_its_verdict(lora_path, tiny_base):
    events = []
    report = validate(lora_path, base_model=str(tiny_base), isolate=True, on_event=events.append)
    assert report.ok and report.load_check == f"passed on {tiny_base}", report.summary()
    assert events[0]["type"] == "task_started" and events[0]["task"] == "validate"
    assert _phases(events) == list(LOAD_PHASES)
    assert [e["done"] for e in events if e["type"] == "progress"] == list(range(len(LOAD_PHASES)))
    assert events[-1]["type"] == "task_finished" and events[-1]["report"]["ok"] is True


def test_an_in_process_load_check_reports_the_same_phases(lora_path, tiny_base):
    events = []
    assert check_loads(lora_path, str(tiny_base), on_event=events.append) == []
    assert _phases(events) == list(LOAD_PHASES)


def test_a_cancelled_isolated_load_check_ends_its_child_and_says_cancelled(lora_path, tiny_base):
    events = []
    # Cancel as soon as the child says it is loading the base model.
    with pytest.raises(Cancelled, match="load check was cancelled"):
        validate(lora_path, base_model=str(tiny_base), isolate=True, on_event=events.append,
                 should_stop=lambda: bool(_phases(events)))
    assert _phases(events)[:1] == ["loading base model"]
    assert not [e for e in events if e["type"] == "task_finished"], "the child ran on to its verdict"


def test_a_cancelled_in_process_load_check_stops_before_the_next_phase(lora_path, tiny_base):
    events = []
    with pytest.raises(Cancelled):
        check_loads(lora_path, str(tiny_base), on_event=events.append,
                    should_stop=lambda: _phases(events) == ["loading base model"])
    assert _phases(events) == ["loading base model"]
