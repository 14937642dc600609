"""Where and when a new run starts, for the train form: a GPU select (default, auto, or one GPU with
its free memory, from `loradeck.trainer.gpu.processes`) and a queue toggle (start by itself when the memory
frees). The form reads `choice()`; the GPU list is filled from a worker thread."""

from __future__ import annotations

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Checkbox, Label, Select

from loradeck.trainer.gpu import processes as gpu_processes
from loradeck.tui.widgets.tick_box import TickBox

DEFAULT, AUTO = "default", "auto"


class RunPlacement(Horizontal):
    DEFAULT_CSS = """
    RunPlacement { height: 1; padding: 0 1; }
    RunPlacement > Label { width: 24; }
    RunPlacement > Select { width: 1fr; height: 1; }
    RunPlacement > Select > SelectCurrent { border: none; height: 1; padding: 0 1; }
    RunPlacement > Select:focus > SelectCurrent { border: none; background: $boost; }
    RunPlacement > Checkbox { border: none; height: 1; padding: 0; width: auto; margin: 0 0 0 1; }
    """

    def compose(self) -> ComposeResult:
        yield Label("GPU")
        yield Select([("default device", DEFAULT), ("auto: most free memory", AUTO)], value=DEFAULT,
                     allow_blank=False, id="placement-gpu",
                     tooltip="auto: the GPU with the most free memory that fits the run's estimate")
        yield TickBox("queue", id="placement-queue",
                       tooltip="wait in the queue and start by itself when the GPU memory frees"
                               " (first in, first out; it outlives the TUI)")

    def on_mount(self) -> None:
        self._list_gpus()

    @work(thread=True, exclusive=True, group="placement-gpus", exit_on_error=False, description="list GPUs")
    def _list_gpus(self) -> None:
        report = gpu_processes.snapshot()
        options = [(f"GPU {g.index}: {g.name or '?'}, {gpu_processes.fmt_gib(g.mem_free)} free", str(g.index))
                   for g in report.gpus]
        if options and self.is_attached:
            self.app.call_from_thread(self._add_gpus, options)

    def _add_gpus(self, options: list[tuple[str, str]]) -> None:
        select = self.query_one("#placement-gpu", Select)
        value = select.value
        select.set_options([("default device", DEFAULT), ("auto: most free memory", AUTO), *options])
        select.value = value

    @on(Select.Changed)
    @on(Checkbox.Changed)
    def _own_change(self, event) -> None:
        event.stop()  # the form validates its config fields; placement is not one of them

    def choice(self) -> tuple[str | None, bool]:
        """(the `--gpu` value: None, "auto" or an index as text; queue it?)."""
        value = self.query_one("#placement-gpu", Select).value
        gpu = None if value in (DEFAULT, Select.BLANK) else str(value)
        return gpu, self.query_one("#placement-queue", Checkbox).value
