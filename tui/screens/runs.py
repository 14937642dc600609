"""The runs screen: every run of a project with its state; open, stop, resume, export."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

from trainer.project import Project


class RunsScreen(Screen):
    """List the runs of `project` (work in progress)."""

    def __init__(self, project: Project) -> None:
        super().__init__()
        self.project = project

    def compose(self) -> ComposeResult:
        yield Static(f"Runs of {self.project.name}")
        yield Footer()
