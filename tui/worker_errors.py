"""Failed workers go to the one error modal.

Textual posts `Worker.StateChanged` to the node that started the worker and does not bubble it, so
every screen or widget that starts workers mixes this in; they all end in `LoradeckApp.show_error`
(harlequin's single error path).
"""

from __future__ import annotations

from textual.worker import Worker, WorkerState


class ShowsWorkerErrors:
    """Mixin for a Screen or Widget: a worker of this node that raises opens the error modal."""

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR or event.worker.error is None:
            return
        what = event.worker.description or event.worker.name or "background task"
        show = getattr(self.app, "show_error", None)
        if show is not None:
            show(event.worker.error, title=f"{what} failed")
        else:  # hosted by another app (tests of single screens)
            self.notify(f"{what} failed: {event.worker.error}", severity="error")
