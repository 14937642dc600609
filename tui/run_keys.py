"""Key bindings of the run screens (train form, monitor, runs), in loradeck.tui.keys' format.

loradeck.tui.keys merges RUN_BINDINGS into its DEFAULTS, so the command palette, the help screen and the
user's keymap file (`[keys] "monitor.stop" = "ctrl+x"`) treat them like every other binding. A table
only: the screens build their Bindings with loradeck.tui.keys.bind like every other screen.
"""

from __future__ import annotations

# id -> (default keys, action, description, shown in the footer)
RUN_BINDINGS: dict[str, tuple[str, str, str, bool]] = {
    # train form
    "train.launch": ("ctrl+l,f5", "launch", "Launch", True),
    "train.preset": ("f2", "next_preset", "Preset", True),
    "train.prompts": ("f3", "sample_prompts", "Prompts", True),  # 20 fields down otherwise
    "train.runs": ("ctrl+r", "runs", "Runs", True),
    "train.reprep": ("f8", "reprep", "Re-prep", False),  # offered by the preflight panel's button (f6, f7: the prompts box)
    "train.defaults": ("f4", "defaults", "Defaults", False),  # named in the form's head line
    # monitor
    "monitor.stop": ("s", "stop_run", "Stop", True),
    "monitor.resume": ("r", "resume_run", "Resume", True),
    "monitor.log": ("l", "toggle_log", "Log", True),
    "monitor.runs": ("u", "runs", "Runs", True),
    "monitor.samples": ("g", "samples", "Samples grid", False),  # F1 / palette; footer keeps 80 columns
    "monitor.sample_prev": ("left_square_bracket", "sample_prev", "Earlier sample", False),
    "monitor.sample_next": ("right_square_bracket", "sample_next", "Later sample", False),
    # runs screen
    "runs.open": ("enter,m", "open_monitor", "Monitor", True),
    "runs.stop": ("s", "stop_run", "Stop", True),
    "runs.resume": ("r", "resume_run", "Resume", True),
    "runs.export": ("e", "export_run", "Export", True),
    "runs.train": ("t", "train", "New run", True),
    "runs.refresh": ("f5", "refresh", "Refresh", False),
    "runs.samples": ("g", "samples", "Samples", False),  # named in the detail line; F1 / palette
    # samples grid
    "samples.compare": ("c,space", "pin_compare", "Compare", True),
    "samples.export": ("e", "export_step", "Export step", True),
    "samples.sheet": ("s", "write_sheet", "Contact sheet", True),
    "samples.refresh": ("f5", "refresh", "Refresh", False),
}

