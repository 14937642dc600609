"""The project's import graph, read from source: every import, including ones inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The installed name of each top folder (pyproject.toml's package-dir).
PACKAGES = {"trainer": "loradeck.trainer", "tui": "loradeck.tui"}


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the product."""
    found = {}
    for folder, dotted in PACKAGES.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([dotted, *parts])] = path
    return found


def _targets(node: ast.AST, here: str, is_package: bool, known: set[str]) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level?) for one import statement."""
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = here if is_package else here.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    resolved = []
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            resolved.append(name)
    return resolved


def graph() -> dict[str, dict[str, list[int]]]:
    """module -> {imported module -> [lines]}; only the project's own modules."""
    mods = modules()
    known = set(mods)
    edges: dict[str, dict[str, list[int]]] = {name: {} for name in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, name, path.name == "__init__.py", known):
                    if target != name:
                        edges[name].setdefault(target, []).append(node.lineno)
    return edges


def cycles(edges: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


if __name__ == "__main__":  # python -m tests.architecture.import_graph: the cycles, with the lines that make them
    edges = graph()
    for component in cycles(edges):
        print("cycle:", ", ".join(component))
        for module in component:
            for target, lines in edges[module].items():
                if target in component:
                    print(f"    {module} -> {target}  (lines {', '.join(map(str, lines))})")
