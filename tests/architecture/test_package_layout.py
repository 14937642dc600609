"""The package map: folders install under the `loradeck` name, every package is listed and says what lives there."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib

from .import_graph import PACKAGES, REPO


def _package_folders() -> set[str]:
    found = set()
    for folder, dotted in PACKAGES.items():
        for init in (REPO / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join([dotted, *parts]))
    return found


def test_pyproject_lists_every_package_folder_and_maps_the_folders_under_loradeck():
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert set(setup["packages"]) == _package_folders()
    assert setup["package-dir"] == {dotted: folder for folder, dotted in PACKAGES.items()}


def test_every_package_says_in_its_docstring_what_lives_there():
    for package in sorted(_package_folders()):
        folder = REPO / package.split(".")[1] / os.path.join(*package.split(".")[2:], "")
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and len(doc.split()) >= 5, f"{package}: no docstring saying what lives there"


def test_another_top_level_trainer_package_cannot_shadow_ours(tmp_path):
    # A distribution that ships a top-level `trainer` (one exists on the public index) is on the path first.
    for name in ("trainer", "tui"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("raise ImportError('the other distribution')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    for module in ("loradeck.trainer", "loradeck.tui"):
        proc = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)
        assert proc.returncode == 0 and "loradeck" in proc.stdout, proc.stderr
