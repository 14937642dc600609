"""The train screen: a form for a run's config, with presets, inline validation and launch."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Static

from trainer.project import Project


class TrainFormScreen(Screen):
    """Edit a TrainConfig for `project` and launch it as a detached run (work in progress)."""

    def __init__(self, project: Project) -> None:
        super().__init__()
        self.project = project

    def compose(self) -> ComposeResult:
        yield Static(f"Train {self.project.name}")
        yield Footer()
