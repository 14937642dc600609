"""The run screens never bring torch (or its friends) into the TUI process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_run_screens_and_their_engine_calls_import_no_torch():
    code = ("import sys\n"
            "import loradeck.tui.screens.train_form, loradeck.tui.screens.monitor, loradeck.tui.screens.runs, loradeck.tui.run_actions\n"
            "import loradeck.trainer.lora.publish, loradeck.trainer.runs.lifecycle\n"
            "import loradeck.tui.widgets.preflight_panel, loradeck.tui.screens.prep_dialog, loradeck.tui.form_hints\n"
            # the train form runs the preflight in the TUI process (a worker thread)
            "import tempfile, loradeck.trainer.dataset.preflight, loradeck.trainer.dataset.project\n"
            "p = loradeck.trainer.dataset.project.create_project('p', tempfile.mkdtemp(), trigger_word='sks')\n"
            "loradeck.trainer.dataset.preflight.check(p)\n"
            "heavy = [m for m in ('torch', 'diffusers', 'transformers', 'peft', 'accelerate') if m in sys.modules]\n"
            "print(','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == ""
