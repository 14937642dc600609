"""Failed workers go to the one error modal.

Textual posts `Worker.StateChanged` to the node that started the worker and does not bubble it, so
every screen or widget that starts workers mixes this in; they all end in `LoradeckApp.show_error`
(harlequin's single error path). Failures a worker catches itself, to give them a better title, go
the same way through `show_error` here.
"""

from __future__ import annotations

from textual.dom import DOMNode
from textual.worker import Worker, WorkerState


def show_error(node: DOMNode, error: BaseException | str, title: str = "Error") -> None:
    """Show `error` in the app's error modal (LoradeckApp.show_error); in an app without one (tests
    of single screens) as an error notification."""
    show = getattr(node.app, "show_error", None)
    if show is not None:
        show(error, title=title)
    else:
        node.notify(f"{title}: {error}", severity="error")


class ShowsWorkerErrors:
    """Mixin for a Screen or Widget: a worker of this node that raises opens the error modal."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR or event.worker.error is None:
            return
        what = event.worker.description or event.worker.name or "background task"
        show_error(self, event.worker.error, title=f"{what} failed")
