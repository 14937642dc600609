"""No import cycle among the project's modules, counting imports inside functions: a cycle hidden in a
function is still one (python -m tests.architecture.import_graph prints each with its lines)."""

from __future__ import annotations

from .import_graph import cycles, graph


def test_the_import_graph_has_no_cycle():
    edges = graph()
    found = cycles(edges)
    detail = []
    for component in found:
        detail.append("cycle: " + ", ".join(component))
        detail += [f"  {m} -> {t} (lines {lines})" for m in component for t, lines in edges[m].items()
                   if t in component]
    assert not found, "\n".join(detail)


def test_the_graph_sees_imports_inside_functions():
    # The rule counts function-local imports: the graph must see this one (the trainer process loads
    # the loop inside main() to keep --help light).
    edges = graph()
    assert "loradeck.trainer.train.loop" in edges["loradeck.trainer.train.process"]


def test_no_tui_screen_imports_another_screen():
    edges = graph()
    screens = [m for m in edges if m.startswith("loradeck.tui.screens.")]
    crossing = [(a, b) for a in screens for b in edges[a] if b.startswith("loradeck.tui.screens.") and b != a]
    assert not crossing, f"screens reach each other through the app, not by import: {crossing}"
