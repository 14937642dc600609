"""The TUI never brings torch (or its friends) into its process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "diffusers", "transformers", "peft", "accelerate", "onnxruntime")


def test_no_module_of_the_tui_imports_torch():
    # Every module of loradeck.tui (the app, every screen, every widget), in a fresh interpreter;
    # __main__ is left out: importing it starts the TUI.
    code = ("import importlib, pkgutil, sys\n"
            "import loradeck.tui\n"
            "names = [m.name for m in pkgutil.walk_packages(loradeck.tui.__path__, 'loradeck.tui.')\n"
            "         if not m.name.endswith('.__main__')]\n"
            "for name in names:\n"
            "    importlib.import_module(name)\n"
            f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
            "print(len(names), ','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    count, _, heavy = out.stdout.strip().partition(" ")
    assert int(count) > 40  # the walk really found the screens and widgets
    assert heavy == ""


def test_run_screens_and_their_engine_calls_import_no_torch():
    code = ("import sys\n"
            "import loradeck.tui.screens.train_form, loradeck.tui.screens.monitor, loradeck.tui.screens.runs, loradeck.tui.run_actions\n"
            "import loradeck.trainer.lora.publish, loradeck.trainer.runs.lifecycle\n"
            "import loradeck.tui.widgets.preflight_panel, loradeck.tui.screens.prep_dialog, loradeck.tui.form_hints\n"
            # the train form runs the preflight in the TUI process (a worker thread)
            "import tempfile, loradeck.trainer.dataset.preflight, loradeck.trainer.dataset.project\n"
            "p = loradeck.trainer.dataset.project.create_project('p', tempfile.mkdtemp(), trigger_word='sks')\n"
            "loradeck.trainer.dataset.preflight.check(p)\n"
            f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""
