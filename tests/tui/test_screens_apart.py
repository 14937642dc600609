"""TUI screens reach each other by name (loradeck.tui.navigation), never by importing each other."""

from __future__ import annotations

from textual.screen import Screen

from loradeck.tui import navigation
from tests.architecture.import_graph import cycles, graph

SCREENS = "loradeck.tui.screens."


def test_no_screen_module_imports_another():
    edges = graph()
    found = [f"{module} -> {target} (lines {lines})"
             for module, targets in edges.items() if module.startswith(SCREENS)
             for target, lines in targets.items() if target.startswith(SCREENS)]
    assert found == []


def test_the_tui_has_no_import_cycle():
    assert [c for c in cycles(graph()) if any(m.startswith("loradeck.tui") for m in c)] == []


def test_every_screen_name_builds_a_screen_of_the_screens_package():
    for name in navigation.SCREENS:
        cls = navigation.screen_class(name)
        assert issubclass(cls, Screen) and cls.__module__.startswith(SCREENS), name
