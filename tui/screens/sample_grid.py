"""The samples grid: a run's sample images by step (rows) and prompt (columns), to pick the best checkpoint.

The grid is loradeck.trainer.runs.sample_grid's (read in a worker). Arrow keys move over it; the cell under the
cursor is previewed on the left. `c` pins the current step: its sample of the same prompt stays on
the right, so two steps are compared side by side while the cursor moves. `e` exports the LoRA of
the selected step through the export dialog the runs screen uses and the engine's `--checkpoint` path
(loradeck.trainer.lora.publish); `s` writes the contact sheet PNG into the run folder.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from loradeck.trainer.dataset.project import Project
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.runs.sample_grid import SampleGrid, collect, write_contact_sheet
from loradeck.tui import navigation, run_actions
from loradeck.tui.keys import bind
from loradeck.tui.widgets.image_preview import ImagePreview
from loradeck.tui.worker_errors import ShowsWorkerErrors, show_error

FIXED_COLUMNS = 2  # step, LoRA; then one column per prompt


class SampleGridScreen(ShowsWorkerErrors, Screen):
    """The samples of run `run_id` of `project` (None: the latest run)."""

    DEFAULT_CSS = """
    SampleGridScreen #grid-title { height: 1; padding: 0 1; text-style: bold; text-wrap: nowrap;
                                   text-overflow: ellipsis; }
    SampleGridScreen #grid-table { height: auto; max-height: 7; }
    SampleGridScreen #grid-prompt { height: 1; padding: 0 1; color: $text-muted; text-wrap: nowrap;
                                    text-overflow: ellipsis; }
    SampleGridScreen #grid-previews { height: 1fr; }
    SampleGridScreen .grid-side { width: 1fr; }
    SampleGridScreen .grid-side-label { height: 1; padding: 0 1; text-style: bold; }
    SampleGridScreen #grid-b-side { border-left: solid $panel; }
    """

    BINDINGS = [bind("samples.compare"), bind("samples.export"), bind("samples.sheet"),
                bind("samples.refresh"), bind("app.back")]

    def __init__(self, project: Project, run_id: str | None = None) -> None:
        super().__init__()
        self.project = project
        self.run_id = run_id
        self.run_dir: Path | None = None
        self.grid: SampleGrid | None = None
        self.pinned: int | None = None   # the step compared against (right side)

    def compose(self) -> ComposeResult:
        yield Static("reading samples…", id="grid-title", markup=False)
        yield DataTable(id="grid-table", cursor_type="cell", zebra_stripes=True)
        yield Static("", id="grid-prompt", markup=False)
        mode = getattr(self.app, "preview_mode", "halfblock")
        with Horizontal(id="grid-previews"):
            with Vertical(classes="grid-side", id="grid-a-side"):
                yield Static("", classes="grid-side-label", id="grid-a-label", markup=False)
                yield ImagePreview(mode, id="grid-a")
            with Vertical(classes="grid-side", id="grid-b-side"):
                yield Static("c: pin this step to compare", classes="grid-side-label", id="grid-b-label",
                             markup=False)
                yield ImagePreview(mode, id="grid-b")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"{self.project.name} · samples"
        self.load()

    def action_refresh(self) -> None:
        self.load()

    @work(thread=True, exclusive=True, group="sample-grid", exit_on_error=False, description="read samples")
    def load(self) -> None:
        files = run_actions.find_run(self.project, self.run_id)
        grid = collect(files.dir) if files is not None else None
        self.app.call_from_thread(self._show, grid)

    def _show(self, grid: SampleGrid | None) -> None:
        table = self.query_one(DataTable)
        keep = table.cursor_coordinate if self.grid is not None else None
        self.grid = grid
        table.clear(columns=True)
        if grid is None:
            self.query_one("#grid-title", Static).update(f"{self.project.name} has no runs yet")
            return
        self.run_dir, self.run_id = grid.run_dir, grid.run_dir.name
        self.sub_title = self.run_id
        table.add_column("Step", key="step")
        table.add_column("LoRA", key="lora")
        for i, prompt in enumerate(grid.prompts):
            table.add_column(f"P{i + 1}", key=f"p{i}")
        for step in grid.steps:
            lora = grid.lora_label(step)
            cells = [Text("●", style="green") if (step, i) in grid.cells else Text("·", style="dim")
                     for i in range(len(grid.prompts))]
            table.add_row(str(step), Text(lora, style="bold green" if lora != "-" else "dim"), *cells,
                          key=str(step))
        if not grid.steps:
            self.query_one("#grid-title", Static).update(
                f"{self.run_id}: no samples (train with sample prompts and a sample interval)")
            return
        self.query_one("#grid-title", Static).update(
            f"{self.run_id}: {len(grid.steps)} steps × {len(grid.prompts)} prompts (Esc back)")
        if keep is not None:
            table.cursor_coordinate = keep
        else:  # start on the newest step's first sample
            table.cursor_coordinate = (len(grid.steps) - 1, FIXED_COLUMNS if grid.prompts else 0)
        table.focus()
        self._update_previews()

    # -- where the cursor is ---------------------------------------------------------------------
    def selected(self) -> tuple[int | None, int | None]:
        """(step, prompt column) under the cursor; the column is None on the step / LoRA columns."""
        if self.grid is None or not self.grid.steps:
            return None, None
        row, column = self.query_one(DataTable).cursor_coordinate
        step = self.grid.steps[min(row, len(self.grid.steps) - 1)]
        prompt = column - FIXED_COLUMNS
        return step, prompt if 0 <= prompt < len(self.grid.prompts) else None

    @on(DataTable.CellHighlighted)
    def _moved(self) -> None:
        self._update_previews()

    def _update_previews(self) -> None:
        grid = self.grid
        step, prompt = self.selected()
        if grid is None or step is None:
            return
        column = prompt if prompt is not None else 0
        text = grid.prompts[column] if grid.prompts else ""
        self.query_one("#grid-prompt", Static).update(f"P{column + 1}: {text}")
        self.query_one("#grid-a-label", Static).update(f"step {step} · {grid.lora_label(step)}")
        self.query_one("#grid-a", ImagePreview).show(grid.cell(step, column))
        if self.pinned is not None:
            self.query_one("#grid-b-label", Static).update(f"step {self.pinned} · pinned (c: unpin)")
            self.query_one("#grid-b", ImagePreview).show(grid.cell(self.pinned, column))

    # -- actions -------------------------------------------------------------------------------
    def action_pin_compare(self) -> None:
        step, _ = self.selected()
        if step is None:
            return
        if self.pinned == step:
            self.pinned = None
            self.query_one("#grid-b-label", Static).update("c: pin this step to compare")
            self.query_one("#grid-b", ImagePreview).show(None)
            return
        self.pinned = step
        self._update_previews()

    def action_export_step(self) -> None:
        step, _ = self.selected()
        if step is None or self.grid is None or self.run_dir is None:
            return
        checkpoint = self.grid.export_choice(step)
        if checkpoint is None:
            kept = [s for s in self.grid.steps if self.grid.export_choice(s) is not None]
            self.notify(f"no LoRA of step {step} was kept" + (f"; steps with one: {', '.join(map(str, kept))}"
                                                                 if kept else ""), severity="warning")
            return
        dest, on_conflict = run_actions.export_defaults(self.project)
        run_dir = self.run_dir

        def chosen(answer) -> None:  # an ExportChoice (folder, name, checkpoint, on_conflict), or None
            if answer is not None:
                self.notify(f"validating and exporting step {step} of {run_dir.name}…")
                self._export(run_dir, answer)

        self.app.push_screen(navigation.screen(
            "export", run_dir.name, dest, checkpoint, on_conflict=on_conflict,
            default_name=lambda c: run_actions.export_name(self.project, run_dir.name, c)), chosen)

    @work(thread=True, group="sample-export", exit_on_error=False, description="export a step")
    def _export(self, run_dir: Path, choice) -> None:
        try:
            result = run_actions.export(self.project, RunFiles(run_dir), choice,
                                       **run_actions.watched_export(self))
        except Exception as e:
            self.app.call_from_thread(show_error, self, e, f"Could not export {run_dir.name}")
            return
        self.app.call_from_thread(self.notify, f"exported to {getattr(result, 'adapter', result)}")

    def action_write_sheet(self) -> None:
        if self.grid is None or not self.grid.steps:
            self.notify("no samples to put on a contact sheet", severity="warning")
            return
        self._sheet(self.grid)

    @work(thread=True, group="sample-sheet", exit_on_error=False, description="contact sheet")
    def _sheet(self, grid: SampleGrid) -> None:
        path = write_contact_sheet(grid)
        self.app.call_from_thread(self.notify, f"contact sheet written: {path}")

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()
