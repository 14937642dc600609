"""Typed messages the TUI's workers and widgets send back to screens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message


class TaskEvent(Message):
    """One JSON event from a prep / caption subprocess (loradeck.trainer.events task types)."""

    def __init__(self, task: str, event: dict[str, Any]) -> None:
        super().__init__()
        self.task = task
        self.event = event

    def can_replace(self, message: Message) -> bool:
        # A burst of progress events collapses to the newest; other events are all kept.
        return (isinstance(message, TaskEvent) and message.task == self.task
                and message.event.get("type") == "progress" and self.event.get("type") == "progress")


@dataclass
class TaskDone(Message):
    """A subprocess task ended: `status` is completed / stopped / failed; `failures` are item_failed events."""

    task: str
    status: str
    failures: list
    summary: dict


class ImportProgress(Message):
    def __init__(self, done: int, total: int, item: str = "") -> None:
        super().__init__()
        self.done, self.total, self.item = done, total, item

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, ImportProgress)


@dataclass
class ImportDone(Message):
    """The import finished; `report` is the engine's ImportReport as a dict."""

    report: dict
