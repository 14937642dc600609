"""Screens by name: a screen opens another through this table, never by importing the other's module.

`screen("monitor", project, run_id)` builds the screen named "monitor"; the caller pushes it (with
its callback, if it wants the answer). The screen's module is imported then, by name, so screen
modules never depend on each other (tests/tui/test_screens_apart.py) and the TUI loads a screen
the first time it is opened.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from textual.screen import Screen

# name -> (module under loradeck.tui.screens, class)
SCREENS: dict[str, tuple[str, str]] = {
    "projects": ("projects", "ProjectsScreen"),
    "new_project": ("new_project", "NewProjectScreen"),
    "damaged_project": ("damaged_project", "DamagedProjectScreen"),
    "import": ("import_files", "ImportScreen"),
    "dataset": ("dataset", "DatasetScreen"),
    "prep": ("prep_dialog", "PrepDialog"),
    "caption_choice": ("caption_choice", "CaptionChoiceScreen"),
    "caption_dialog": ("caption_dialog", "CaptionDialog"),
    "caption_editor": ("caption_editor", "CaptionEditorScreen"),
    "conflict": ("conflict", "ConflictScreen"),
    "find_replace": ("find_replace", "FindReplaceScreen"),
    "preflight": ("preflight", "PreflightScreen"),
    "train_form": ("train_form", "TrainFormScreen"),
    "monitor": ("monitor", "MonitorScreen"),
    "runs": ("runs", "RunsScreen"),
    "sample_grid": ("sample_grid", "SampleGridScreen"),
    "export": ("export_dialog", "ExportScreen"),
    "confirm": ("confirm", "ConfirmScreen"),
    "error": ("error", "ErrorScreen"),
    "help": ("help", "HelpScreen"),
}


def screen_class(name: str) -> type[Screen]:
    module, cls = SCREENS[name]
    return getattr(import_module(f"loradeck.tui.screens.{module}"), cls)


def screen(name: str, *args: Any, **kwargs: Any) -> Screen:
    """A new screen `name` (a key of SCREENS), built with the arguments its class takes."""
    return screen_class(name)(*args, **kwargs)
