"""Key bindings: every binding has a stable id, so users can remap it in a keymap file.

The keymap file is `$XDG_CONFIG_HOME/loradeck/keys.toml` (default `~/.config/loradeck/keys.toml`):

    [keys]
    "editor.next" = "ctrl+n"          # one key
    "dataset.prep" = "p,f6"           # or several, comma-separated

Ids and default keys are listed in one table (DEFAULTS) and in docs/tui.md; `bind()` builds a
Textual Binding from it, so a screen never spells a key itself.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from textual.binding import Binding

from loradeck.tui.run_keys import RUN_BINDINGS

# id -> (default keys, action, description, shown in the footer)
DEFAULTS: dict[str, tuple[str, str, str, bool]] = {
    # everywhere
    "app.quit": ("ctrl+q", "quit", "Quit", True),
    "app.help": ("f1,question_mark", "help", "Help", True),
    "app.back": ("escape", "back", "Back", False),  # Esc is known; the footer space goes to the rest
    # projects screen
    "projects.open": ("enter", "open", "Open", True),
    "projects.new": ("n", "new", "New", True),
    "projects.import": ("i", "import_folder", "Import", True),
    "projects.delete": ("d", "delete", "Delete", True),
    "projects.train": ("t", "train", "Train", True),
    "projects.runs": ("r", "runs", "Runs", True),
    "projects.refresh": ("f5", "refresh", "Refresh", False),
    # dataset screen
    "dataset.edit": ("enter,e", "edit", "Edit", True),
    "dataset.filter": ("slash", "focus_filter", "Filter", True),
    "dataset.missing": ("m", "toggle_missing", "Missing", False),  # footer room for Cancel and Help
    "dataset.import": ("i", "import_folder", "Import", False),
    "dataset.prep": ("p", "prep", "Prep", True),
    "dataset.caption": ("c", "caption", "Caption", True),
    "dataset.cancel": ("x", "cancel_task", "Cancel", True),
    # The dataset and editor footers hold what fits 80 columns next to "esc Back", "f1 Help" and the
    # "^p palette" hint (tests/tui/test_footers.py checks it); the rest is in F1 and the palette.
    "dataset.check": ("k", "preflight", "Check", False),
    "dataset.replace": ("f", "find_replace", "Replace", False),
    "dataset.preview": ("v", "cycle_preview", "Preview mode", False),
    "dataset.train": ("t", "train", "Train", True),
    "dataset.runs": ("r", "runs", "Runs", False),
    "dataset.refresh": ("f5", "refresh", "Refresh", False),
    "dataset.undo": ("ctrl+z", "undo_batch", "Undo batch edit", False),  # F1 / palette list it
    # caption editor
    "editor.next": ("pagedown,ctrl+n", "next_image", "Next", True),
    "editor.prev": ("pageup,ctrl+b", "prev_image", "Prev", True),
    "editor.save": ("ctrl+s", "save", "Save", False),
    "editor.undo": ("ctrl+z", "undo", "Undo", False),  # the usual keys; F1 lists them
    "editor.redo": ("ctrl+y", "redo", "Redo", False),  # the footer keeps 80 columns; F1 lists it
    "editor.complete": ("tab", "complete_tag", "Complete tag", False),
    "editor.trigger": ("ctrl+t", "insert_trigger", "Trigger", True),
    "editor.replace": ("ctrl+r", "find_replace", "Replace", False),
    "editor.external": ("ctrl+o", "open_external", "$EDITOR", True),
}

# The run screens' bindings (train form, monitor, runs, samples grid) have a table of their own.
DEFAULTS.update(RUN_BINDINGS)

# Bindings that must win over the focused widget (TextArea binds pageup/pagedown/ctrl+z itself).
_PRIORITY = {"editor.next", "editor.prev", "editor.undo", "editor.redo", "editor.save",
             "editor.trigger", "editor.replace", "editor.external", "app.quit"}


def bind(binding_id: str, *, show: bool | None = None) -> Binding:
    """The Textual Binding for `binding_id`, with its default keys (a keymap may override them)."""
    keys, action, description, shown = DEFAULTS[binding_id]
    return Binding(keys, action, description, show=shown if show is None else show,
                   id=binding_id, priority=binding_id in _PRIORITY, tooltip=f"binding id: {binding_id}")


def keymap_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "loradeck" / "keys.toml"


def load_keymap(path: Path | None = None) -> tuple[dict[str, str], list[str]]:
    """The user's remapped keys ({binding id: keys}) and a list of problems found in the file.

    A missing file is no keymap; a broken file or an unknown id is reported, never fatal.
    """
    path = path or keymap_path()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, []
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        return {}, [f"{path}: not read ({e})"]
    table = data.get("keys", {})
    if not isinstance(table, dict):
        return {}, [f"{path}: [keys] must be a table"]
    keymap, problems = {}, []
    for binding_id, keys in table.items():
        if binding_id not in DEFAULTS:
            problems.append(f"{path}: unknown binding id {binding_id!r}")
        elif not isinstance(keys, str) or not keys.strip():
            problems.append(f"{path}: {binding_id} must be a key string such as \"ctrl+n\"")
        else:
            keymap[binding_id] = keys.replace(" ", "")
    return keymap, problems
