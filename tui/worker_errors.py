"""Failed workers go to the one error modal.

Textual posts `Worker.StateChanged` to the node that started the worker and does not bubble it, so
every screen or widget that starts workers mixes this in; they all end in `LoradeckApp.show_error`
(harlequin's single error path). Failures a worker catches itself, to give them a better title, go
the same way through `show_error` here.
"""

from __future__ import annotations

from textual.dom import DOMNode
from textual.worker import Worker, WorkerState

from loradeck.trainer.errors import LoradeckError
from loradeck.tui import navigation


def show_error(node: DOMNode, error: BaseException | str, title: str = "Error") -> None:
    """Show `error` in the app's error modal (LoradeckApp.show_error); an app without that method
    (tests hosting a single screen) gets the same modal with the message and hint."""
    show = getattr(node.app, "show_error", None)
    if show is not None:
        show(error, title=title)
        return
    if isinstance(error, LoradeckError):
        node.app.push_screen(navigation.screen("error", title, " ".join(str(error).split()), error.hint))
    else:
        message = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else str(error)
        node.app.push_screen(navigation.screen("error", title, message))


class ShowsWorkerErrors:
    """Mixin for a Screen or Widget: a worker of this node that raises opens the error modal."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR or event.worker.error is None:
            return
        what = event.worker.description or event.worker.name or "background task"
        show_error(self, event.worker.error, title=f"{what} failed")
