"""The runs screen: every run of a project with its state; open in the monitor, stop, resume, export.

The list refreshes itself (a poll that reschedules only after the previous one finished), so a
run that finishes or crashes while the screen is open changes state in place.
"""

from __future__ import annotations

import time
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from loradeck.trainer.cli_hint import command
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.launch_failure import NEVER_STARTED
from loradeck.trainer.runs.lifecycle import RunInfo
from loradeck.trainer.runs.states import ACTIVE, LIVE
from loradeck.tui import navigation, run_actions
from loradeck.tui.form_hints import form_hint
from loradeck.tui.keys import bind
from loradeck.tui.run_state_text import state_text, stopping_text
from loradeck.tui.visibility import visible
from loradeck.tui.worker_errors import ShowsWorkerErrors, show_error

REFRESH_SECONDS = 2.0


def started_text(started: float | None) -> str:
    # No year: the run id starts with the date already, and the LoRA column must fit 80 columns.
    return time.strftime("%m-%d %H:%M", time.localtime(started)) if started else "-"


class RunsScreen(ShowsWorkerErrors, Screen):
    """Every run of `project`, newest first, with its state and progress."""

    DEFAULT_CSS = """
    RunsScreen #runs-title { height: 1; padding: 0 1; text-style: bold; }
    RunsScreen DataTable { height: 1fr; }
    RunsScreen #runs-detail { height: auto; max-height: 4; padding: 0 1; color: $text-muted; }
    """

    BINDINGS = [bind("runs.open"), bind("runs.stop"), bind("runs.resume"), bind("runs.export"),
                bind("runs.train"), bind("runs.refresh"), bind("runs.samples"), bind("app.back")]

    COLUMNS = ("run", "state", "steps", "loss", "started", "output")

    def _cells(self, r: RunInfo) -> tuple:
        steps = f"{r.step}/{r.total_steps}" if r.total_steps else str(r.step)
        if r.state == "queued":  # its place in the queue instead of steps not taken yet
            q = r.queue or {}
            steps = "orphaned" if q.get("orphaned") else f"#{q.get('place') or '?'} of {q.get('of') or '?'}"
        loss = f"{r.loss:.4f}" if r.loss is not None else ""
        output = Path(r.output).name if r.output else ""  # the folder is the run's own
        state = "stopping" if r.run_id in self.stopping and r.state in LIVE else r.state
        return (r.run_id, state_text(state), steps, loss, started_text(r.started),
                output)

    def _redraw(self, run_id: str) -> None:
        row = self.rows.get(run_id)
        if row is not None:
            table = self.query_one(DataTable)
            for column, value in zip(self.COLUMNS, self._cells(row)):
                table.update_cell(run_id, column, value, update_width=True)
            self._describe()

    def __init__(self, project: Project, *, refresh_seconds: float = REFRESH_SECONDS) -> None:
        super().__init__()
        self.project = project
        self.rows: dict[str, RunInfo] = {}
        self.refresh_seconds = refresh_seconds
        self.refreshes = 0
        self._timer = None
        self.stopping: dict[str, int] = {}  # run id -> the step it is finishing after a stop was asked
        self._forced: set[str] = set()  # runs force-stopped here

    def compose(self) -> ComposeResult:
        yield Static(f"Runs of {self.project.name}", id="runs-title", markup=False)
        table = DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        for column in self.COLUMNS:
            table.add_column(column.title(), key=column)
        yield table
        yield Static("", id="runs-detail", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"{self.project.name} · runs"

    def on_screen_resume(self) -> None:
        self.refresh_runs()  # back from the monitor or the form: show what changed meanwhile

    @work(thread=True, exclusive=True, group="runs-refresh", exit_on_error=False, description="list runs")
    def refresh_runs(self) -> None:
        if not visible(self) and self.refreshes:
            # covered by another screen: skip the work, look again later (and on resume)
            self.app.call_from_thread(self._schedule_refresh)
            return
        try:
            rows = run_actions.list_runs(self.project)
        except Exception as e:
            self.app.call_from_thread(self._show_problem, e)
            rows = None
        if rows is not None:
            self.app.call_from_thread(self._apply, rows)
        # The next refresh is scheduled only now that this one is done: polls never overlap.
        if self.is_attached:
            self.app.call_from_thread(self._schedule_refresh)

    def _schedule_refresh(self) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(self.refresh_seconds, self.refresh_runs)

    def _show_problem(self, error: BaseException) -> None:
        self.query_one("#runs-detail", Static).update(f"could not list runs: {error}")

    def _apply(self, rows: list[RunInfo]) -> None:
        self.refreshes += 1
        table = self.query_one(DataTable)
        selected = self.selected_run_id()
        same_runs = list(self.rows) == [r.run_id for r in rows]
        old = self.rows
        self.rows = {r.run_id: r for r in rows}
        for run_id in [k for k in self.stopping if k not in self.rows or self.rows[k].state not in LIVE]:
            del self.stopping[run_id]
        # A run that appeared since the last look (launched from the form or a shell) gets the
        # cursor: it is the one the user wants to see next.
        new_runs = [r.run_id for r in rows if r.run_id not in old] if self.refreshes > 1 else []
        if new_runs:
            selected = new_runs[0]
        if same_runs:
            # Update changed cells in place: no flicker, the cursor stays put.
            for r in rows:
                if r != old[r.run_id] or r.run_id in self.stopping:
                    for column, value in zip(self.COLUMNS, self._cells(r)):
                        table.update_cell(r.run_id, column, value, update_width=True)
        else:
            table.clear()
            for r in rows:
                table.add_row(*self._cells(r), key=r.run_id)
            if selected in self.rows:
                table.move_cursor(row=table.get_row_index(selected))
        if not rows:
            self.query_one("#runs-detail", Static).update(
                f"no runs yet: press t to set one up, or run `{command('train', self.project.name)}`")
        else:
            self._describe()

    def selected_run_id(self) -> str | None:
        table = self.query_one(DataTable)
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    def selected(self) -> RunInfo | None:
        run_id = self.selected_run_id()
        return self.rows.get(run_id) if run_id else None

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """The footer offers what the selected run's state allows, as the monitor's does."""
        if action not in ("stop_run", "resume_run"):
            return True
        try:
            row = self.selected()
        except NoMatches:  # not composed yet
            return True
        if row is None:
            return False
        orphaned = row.state == "queued" and bool((row.queue or {}).get("orphaned"))
        if action == "stop_run":
            return row.state in LIVE
        return row.state in ("stopped", "failed", "crashed") or orphaned

    @on(DataTable.RowHighlighted)
    def _describe(self) -> None:
        self.refresh_bindings()
        row = self.selected()
        if row is None:
            return
        hints = {"running": "m/enter: monitor  s: stop", "starting": "m/enter: monitor  s: stop",
                 "completed": "e: export  m/enter: monitor",
                 "stopped": "r: resume  m/enter: monitor", "failed": "r: resume  m/enter: monitor",
                 "crashed": "the process is gone without finishing; r: resume from its last state",
                 "queued": "s: cancel  m/enter: monitor"}
        if row.state == "queued" and (row.queue or {}).get("orphaned"):
            hints["queued"] = "r: requeue  s: cancel"
        hint = hints.get(row.state, "")
        if row.state == "failed" and (row.message or "").startswith(NEVER_STARTED):
            hint = "nothing was trained: fix that, then start a new run (t on the dataset screen)"
        if row.state != "completed" and run_actions.has_checkpoints(self.project, row.run_id):
            hint += "  e: export a checkpoint"  # one folder listing: cheap enough for the UI thread
        why = f" ({row.message})" if row.message else ""
        state = row.state
        if row.run_id in self.stopping and row.state in LIVE:
            state, hint = stopping_text(self.stopping[row.run_id]), "s again: force-stop  m/enter: monitor"
        self.query_one("#runs-detail", Static).update(f"{row.run_id}: {state}{why}. {hint}")

    # -- actions ------------------------------------------------------------------------------
    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_open_monitor()

    def action_open_monitor(self) -> None:
        row = self.selected()
        if row is not None:
            self.app.push_screen(navigation.screen("monitor", self.project, row.run_id))

    def action_stop_run(self) -> None:
        row = self.selected()
        if row is None:
            return
        if row.state not in LIVE and row.state != "queued":
            self.notify(f"{row.run_id} is not running ({row.state})")
            return
        if row.run_id in self.stopping:
            def force(yes: bool | None) -> None:
                if yes:
                    self._engine("force_stop", row)

            self.app.push_screen(navigation.screen(
                "confirm", f"Force-stop {row.run_id} now? It is killed without finishing step {self.stopping[row.run_id]};"
                " resume continues from its last saved state.", yes_label="Force-stop", danger=True), force)
            return
        if row.state == "queued":
            self.app.push_screen(navigation.screen("confirm", f"Cancel queued run {row.run_id}? It leaves the queue.",
                                                   yes_label="Cancel run", danger=True),
                                 lambda yes: self._engine("stop", row) if yes else None)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                # Said at once: the step it is finishing may take minutes on a slow device.
                self.stopping[row.run_id] = min(row.step + 1, row.total_steps) if row.total_steps else row.step + 1
                self._redraw(row.run_id)
                self._engine("stop", row)

        self.app.push_screen(navigation.screen(
            "confirm", f"Stop {row.run_id}? It finishes the current step, saves its state and can be resumed.",
            yes_label="Stop", danger=True), answered)

    def action_resume_run(self) -> None:
        row = self.selected()
        if row is None:
            return
        if row.state in LIVE or row.state == "completed" or (
                row.state == "queued" and not (row.queue or {}).get("orphaned")):
            self.notify(f"{row.run_id} is {row.state}: nothing to resume")
            return
        self._engine("resume", row)

    def action_export_run(self) -> None:
        row = self.selected()
        if row is None:
            return
        checkpoint = ""  # the final LoRA
        if row.state != "completed":
            if not run_actions.has_checkpoints(self.project, row.run_id):
                self.notify(f"{row.run_id} is {row.state}: no final LoRA and no checkpoints to export",
                            severity="warning")
                return
            checkpoint = "latest"
        dest, on_conflict = run_actions.export_defaults(self.project)

        def chosen(answer) -> None:  # an ExportChoice (folder, name, checkpoint, on_conflict), or None
            if answer is not None:
                self.notify(f"validating and exporting {row.run_id}…")
                self._engine("export", row, answer)

        self.app.push_screen(navigation.screen(
            "export", row.run_id, dest, checkpoint, on_conflict=on_conflict,
            default_name=lambda c: run_actions.export_name(self.project, row.run_id, c)), chosen)

    def action_samples(self) -> None:
        row = self.selected()
        if row is not None:
            self.app.push_screen(navigation.screen("sample_grid", self.project, row.run_id))

    def action_train(self) -> None:
        self.app.push_screen(navigation.screen("train_form", self.project))

    def action_refresh(self) -> None:
        self.refresh_runs()

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()

    def _engine_failed(self, what: str, row: RunInfo, error: BaseException) -> None:
        if what in ("stop", "force_stop"):
            if runs.run_state(row.files) not in ACTIVE:
                self.refresh_runs()
                return  # it stopped after all (a force-stop overtook this stop)
        if isinstance(error, LoradeckError):
            error.hint = form_hint(error.hint)  # e.g. "train with --save-every-steps N": a form field here
        show_error(self, error, f"Could not {what.replace('_', '-')} {row.run_id}")

    @work(thread=True, group="run-action", exit_on_error=False, description="run action")
    def _engine(self, what: str, row: RunInfo, *args) -> None:
        try:
            if what == "export":
                result = run_actions.export(self.project, row.files, *args,
                                           **run_actions.watched_export(self))
            elif what == "force_stop":
                result = run_actions.stop(row.files, force=True, timeout=0.5)
            else:
                result = getattr(run_actions, what)(row.files)
        except Exception as e:
            self.app.call_from_thread(self._engine_failed, what, row, e)
            return
        if what == "force_stop":
            self._forced.add(row.run_id)
        elif what == "stop" and row.run_id in self._forced:
            self.app.call_from_thread(self.refresh_runs)
            return  # the stop a force-stop overtook: "force-stopped" said it already
        done = (f"exported {row.run_id} to {getattr(result, 'adapter', result)}" if what == "export"
                else f"stopped {row.run_id}" if what == "stop"
                else f"force-stopped {row.run_id}" if what == "force_stop"
                else f"{what} requested for {row.run_id}")
        self.app.call_from_thread(self.notify, done)
        self.app.call_from_thread(self.refresh_runs)
