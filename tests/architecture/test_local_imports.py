"""Function-local imports remain only where they keep a heavy library off a light path, each with a short comment.

An import inside a function is allowed when it brings in a heavy library (directly, or through a project module that
imports one at module level) that its own module does not already load at import time, and a comment says why: on
the import's line, on the line above it, or at the head of a consecutive block of such imports. Everything else (the
stdlib, light libraries, light project modules) belongs at module level; the few justified exceptions are below.
"""

from __future__ import annotations

import ast
import re
from functools import cache

from tests.architecture.import_graph import REPO, _targets, modules

# Top-level packages that cost real time or memory to import, or that must stay off a path (Textual off the CLI;
# rich's progress bars off `loradeck --help`, whose parser imports every command module).
HEAVY = frozenset(
    {
        "torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "onnxruntime", "onnx", "numpy",
        "PIL", "huggingface_hub", "pynvml", "textual", "textual_image", "bitsandbytes", "xformers", "rich",
    }
)

# (module, the import statement) -> why it stays inside a function although the rule above would move it.
EXCEPTIONS = {
    ("loradeck.trainer.dataset.prep", "from PIL import ImageCms"):
        "a Pillow built without littlecms has no ImageCms: the ICC step is skipped, prep still works",
}

MODULES = modules()
KNOWN = frozenset(MODULES)
_NOQA = re.compile(r"noqa(:\s*[A-Z]+[0-9]+(,\s*[A-Z]+[0-9]+)*)?|type:\s*ignore(\[[^\]]*\])?|pragma:\s*no cover")


def _parents(name: str) -> list[str]:
    """The packages whose __init__ runs before `name` does."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in KNOWN]


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> tuple[set[str], set[str]]:
    """(external top-level packages, project modules) that one import statement loads."""
    if isinstance(node, ast.ImportFrom) and node.level == 0 and not (node.module or "").startswith("loradeck."):
        return {(node.module or "").split(".")[0]}, set()
    if isinstance(node, ast.Import):
        external = {alias.name.split(".")[0] for alias in node.names if not alias.name.startswith("loradeck.")}
        if external:
            return external, set()
    project = set(_targets(node, module, MODULES[module].name == "__init__.py", set(KNOWN)))
    return set(), project | {parent for name in project for parent in _parents(name)}


def _not_run_on_import(node: ast.AST) -> bool:
    """`if TYPE_CHECKING:` and `if __name__ == "__main__":` blocks: never run when the module is imported."""
    test = ast.unparse(node.test) if isinstance(node, ast.If) else ""
    return "TYPE_CHECKING" in test or "__main__" in test


def _walk(tree: ast.AST):
    """(import node, inside a function?, enclosing statement list) for every import run by importing the module."""

    def visit(node: ast.AST, in_function: bool):
        for field, value in ast.iter_fields(node):
            children = value if isinstance(value, list) else [value]
            for child in children:
                if not isinstance(child, ast.AST) or _not_run_on_import(child):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    yield child, in_function, children
                nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                yield from visit(child, nested)

    yield from visit(tree, False)


@cache
def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


@cache
def heavy_at_import(module: str) -> frozenset[str]:
    """The heavy packages a module loads at import time, through its module-level imports."""
    found: set[str] = set()
    for node, in_function, _ in _walk(_tree(module)):
        if in_function:
            continue
        external, project = _imported(node, module)
        found |= external & HEAVY
        for target in project - {module}:
            found |= heavy_at_import(target)
    return frozenset(found)


def _has_reason(line: str) -> bool:
    """Whether a source line carries a comment that says something (not only noqa / type: ignore)."""
    if "#" not in line:
        return False
    comment = line.split("#", 1)[1]
    return bool(re.search(r"\w", _NOQA.sub("", comment).replace("#", "")))


def _commented(node: ast.stmt, siblings: list, lines: list[str]) -> bool:
    """A comment on the import's lines or the line above it, or on those of the head of its block of imports."""
    head, index = node, siblings.index(node)
    while index > 0 and isinstance(siblings[index - 1], (ast.Import, ast.ImportFrom)):
        if siblings[index - 1].end_lineno != head.lineno - 1:
            break
        index -= 1
        head = siblings[index]

    def says_why(statement: ast.stmt) -> bool:
        above = lines[statement.lineno - 2] if statement.lineno > 1 else ""
        own = lines[statement.lineno - 1 : statement.end_lineno]
        return any(map(_has_reason, own)) or (above.strip().startswith("#") and _has_reason(above))

    return says_why(node) or says_why(head)


def problems() -> list[str]:
    found = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node, in_function, siblings in _walk(_tree(module)):
            if not in_function:
                continue
            where = f"{path.relative_to(REPO)}:{node.lineno}: {lines[node.lineno - 1].strip()}"
            if (module, ast.unparse(node)) in EXCEPTIONS:
                continue
            external, project = _imported(node, module)
            brings = external & HEAVY
            for target in project:
                brings |= heavy_at_import(target)
            if not brings:
                found.append(f"{where}  -> light: move it to module level")
            elif not brings - heavy_at_import(module):
                found.append(f"{where}  -> the module already loads {', '.join(sorted(brings))}: move it up")
            elif not _commented(node, siblings, lines):
                found.append(f"{where}  -> heavy ({', '.join(sorted(brings))}) but no comment says why")
    return found


def test_function_local_imports_keep_heavy_libraries_off_light_paths():
    found = problems()
    assert not found, "function-local imports to fix:\n" + "\n".join(found)


def test_the_exceptions_are_still_needed():
    """An exception whose import moved or went away is removed from the list."""
    seen = {
        (module, ast.unparse(node))
        for module in MODULES
        for node, in_function, _ in _walk(_tree(module))
        if in_function
    }
    assert set(EXCEPTIONS) <= seen, sorted(set(EXCEPTIONS) - seen)


def test_the_rule_sees_heavy_imports_through_project_modules():
    """The check itself: a project module that imports torch at module level counts as heavy."""
    heavy = {module for module in MODULES if "torch" in heavy_at_import(module)}
    assert heavy, "no project module imports torch at module level: the transitive rule checks nothing"
    assert "torch" not in heavy_at_import("loradeck.tui.launcher")
    assert "textual" not in heavy_at_import("loradeck.tui.launcher")


if __name__ == "__main__":  # python -m tests.architecture.test_local_imports: the list to work through
    print("\n".join(problems()))
