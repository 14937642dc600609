"""The live monitor of one training run: loss and VRAM graphs, progress, log tail, alerts."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

from trainer.project import Project


class MonitorScreen(Screen):
    """Watch run `run_id` of `project` (None = the latest run) (work in progress)."""

    def __init__(self, project: Project, run_id: str | None = None) -> None:
        super().__init__()
        self.project = project
        self.run_id = run_id

    def compose(self) -> ComposeResult:
        yield Static(f"Monitor {self.project.name} {self.run_id or '(latest)'}")
        yield Footer()
