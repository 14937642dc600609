"""Each package's docstring says what it may import ("May import: ..."), and it imports nothing else."""

from __future__ import annotations

import ast
import re

from .import_graph import REPO, graph

ENGINE = ("config", "dataset", "captions", "train", "gpu", "runs", "slurm", "lora", "cli")
NAMES = ("foundation", *ENGINE)


def package_of(module: str) -> str:
    parts = module.split(".")
    if parts[1] == "tui":
        return "tui"
    return parts[2] if len(parts) > 2 and parts[2] in ENGINE else "foundation"


def declared(package: str) -> set[str]:
    path = REPO / ("tui" if package == "tui" else "trainer" if package == "foundation" else f"trainer/{package}")
    doc = ast.get_docstring(ast.parse((path / "__init__.py").read_text())) or ""
    match = re.search(r"May import:(.*?)(?:\.\s|\.$|$)", doc, re.S)
    assert match, f"{package}/__init__.py says nothing about what it may import"
    text = match.group(1)
    if "the whole engine" in text:
        return set(NAMES)
    return {name for name in NAMES if re.search(rf"\b{name}\b", text)}


def test_every_package_imports_only_what_its_docstring_allows():
    found: dict[str, set[tuple[str, str]]] = {}
    for module, targets in graph().items():
        if module == "loradeck.trainer.__main__":  # the entry point starts the CLI
            continue
        for target in targets:
            a, b = package_of(module), package_of(target)
            if a != b:
                found.setdefault(a, set()).add((module, target))
    problems = []
    for package, edges in sorted(found.items()):
        allowed = declared(package)
        problems += [f"{m} -> {t}" for m, t in sorted(edges) if package_of(t) not in allowed]
    assert not problems, "imports the package docstrings do not allow:\n" + "\n".join(problems)


def test_the_declarations_are_not_wider_than_needed():
    # A "may import" nobody uses is a stale promise: say only what is true.
    used: dict[str, set[str]] = {}
    for module, targets in graph().items():
        for target in targets:
            used.setdefault(package_of(module), set()).add(package_of(target))
    for package in ("foundation", "config", "dataset", "captions", "train", "gpu", "runs", "slurm", "lora"):
        stale = declared(package) - used.get(package, set()) - {package}
        assert not stale, f"{package} declares it may import {sorted(stale)} but does not"
