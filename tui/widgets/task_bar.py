"""One line of progress for the background task of a screen (prep, captioning)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import ProgressBar, Static


class TaskBar(Horizontal):
    """Hidden while idle; shows "<task> done/total item", a bar, and how to cancel."""

    DEFAULT_CSS = """
    TaskBar { height: 1; display: none; }
    TaskBar.-active { display: block; }
    TaskBar > #task-label { width: 1fr; }
    TaskBar > ProgressBar { width: 30; }
    """

    def compose(self) -> ComposeResult:
        yield Static("", id="task-label", markup=False)
        yield ProgressBar(id="task-progress", show_eta=False)

    def begin(self, title: str) -> None:
        self.add_class("-active")
        self.query_one(ProgressBar).update(total=None, progress=0)
        self.query_one("#task-label", Static).update(f"{title}: starting …  (x cancels)")

    def progress(self, title: str, done: int, total: int | None, item: str = "", failed: int = 0) -> None:
        self.query_one(ProgressBar).update(total=total or None, progress=done)
        extra = f"  {failed} failed" if failed else ""
        self.query_one("#task-label", Static).update(f"{title} {done}/{total or '?'} {item}{extra}")

    def end(self) -> None:
        self.remove_class("-active")
