"""The loradeck Textual app: the shell every screen lives in.

- One error display: every worker runs with `exit_on_error=False`; a failed worker reaches
  `show_error()` through loradeck.tui.worker_errors.ShowsWorkerErrors (mixed into every screen and widget
  that starts workers), and screens call `show_error()` for failures outside workers.
- Keyboard first: every binding has an id (loradeck.tui.keys), the user's keymap file is applied at start,
  the command palette (Ctrl+P) offers the current screen's actions, F1 shows help.
- Animations are off: redraws cost bandwidth over SSH.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from textual.app import App

from loradeck.trainer.dataset.demo import DEMO_NAME, create_demo
from loradeck.trainer.dataset.project import Project, open_project, resolve_root
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs import lifecycle as runs
from loradeck.tui import navigation
from loradeck.tui.commands import ScreenActions
from loradeck.tui.estimator import Estimator
from loradeck.tui.keys import bind, load_keymap
from loradeck.tui.widgets.image_preview import detect_mode, prepare_graphics
from loradeck.tui.worker_errors import ShowsWorkerErrors


class LoradeckApp(ShowsWorkerErrors, App):
    """The TUI on a projects root; `start` picks the first screen above the projects list."""

    CSS_PATH = "app.tcss"
    TITLE = "loradeck"
    COMMANDS = App.COMMANDS | {ScreenActions}
    BINDINGS = [bind("app.quit"), bind("app.help")]
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, root: str | os.PathLike | None = None, *, open_name: str | None = None,
                 monitor: tuple[str, str | None] | None = None, preview_mode: str | None = None,
                 keymap_file: Path | None = None):
        super().__init__()
        self.animation_level = "none"
        self.root = resolve_root(root)
        self.open_name = open_name
        self.monitor = monitor
        self.preview_mode = preview_mode or "halfblock"
        self.keymap_file = keymap_file
        self.sub_title = str(self.root)
        self.estimator = Estimator()  # the train form's warm VRAM estimator, started when first needed

    def on_mount(self) -> None:
        keymap, problems = load_keymap(self.keymap_file)
        if keymap:
            self.set_keymap(keymap)
        for problem in problems:
            self.notify(problem, title="keymap", severity="warning", timeout=8)
        self.push_screen(navigation.screen("projects", self.root))
        if self.monitor:
            name, run = self.monitor
            self.push_screen(navigation.screen("monitor", Project(self.root, name), run))
        elif self.open_name:
            self.open_dataset(Project(self.root, self.open_name))

    def on_unmount(self) -> None:
        self.estimator.close()

    # navigation used by several screens (by name: loradeck.tui.navigation); `on_close` runs when that
    # screen is dismissed or popped
    def open_dataset(self, project: Project, on_close=None) -> None:
        self.push_screen(navigation.screen("dataset", project), on_close)

    def open_train(self, project: Project, on_close=None) -> None:
        self.push_screen(navigation.screen("train_form", project), on_close)

    def open_runs(self, project: Project, on_close=None) -> None:
        self.push_screen(navigation.screen("runs", project), on_close)

    def action_help(self) -> None:
        if not isinstance(self.screen, navigation.screen_class("help")):
            self.push_screen(navigation.screen("help", self.screen))

    # the one error path
    def show_error(self, error: BaseException | str, *, title: str = "Error") -> None:
        """Show `error` in the error modal: a LoradeckError as its one line and hint, anything
        else (a bug) with its traceback under the message."""
        if isinstance(error, LoradeckError):
            screen = navigation.screen("error", title, " ".join(str(error).split()), error.hint)
        elif isinstance(error, BaseException):
            details = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            screen = navigation.screen("error", f"{title} (unexpected)", f"{type(error).__name__}: {error}", None,
                                       details)
        else:
            screen = navigation.screen("error", title, str(error))
        self.push_screen(screen)


def run_app(root: str | os.PathLike | None = None, *, open_name: str | None = None) -> int:
    """Open the TUI on the projects root (optionally straight into one project's dataset)."""
    mode = prepare_graphics(detect_mode())
    app = LoradeckApp(root, open_name=open_name, preview_mode=mode)
    app.run()
    return app.return_code or 0


def run_demo(root: str | os.PathLike | None = None, open_tui: bool = True) -> int:
    """Create (or reuse) the demo project, then open the TUI on it."""
    try:
        project = create_demo(root)
    except LoradeckError as e:
        print(f"error: {e.one_line()}")
        return 1
    print(f"demo project {project.name!r} ready in {project.path}")
    if not open_tui:
        return 0
    return run_app(root, open_name=DEMO_NAME)


def run_monitor(root: str | os.PathLike | None, project: str, run: str | None = None) -> int:
    """Open the live monitor of `project`'s run `run` (default: its latest run) in the TUI. An
    unknown project or run is a one-line error (exit 1). `loradeck monitor` without a terminal never
    gets here: loradeck.tui.launcher follows the run as plain lines (loradeck.trainer.cli.plain_monitor) instead."""
    try:
        found = open_project(project, root)
        if run:
            runs.find_run(found, run)
    except LoradeckError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    mode = prepare_graphics(detect_mode())
    app = LoradeckApp(root, monitor=(project, run), preview_mode=mode)
    app.run()
    return app.return_code or 0
