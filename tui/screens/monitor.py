"""The live monitor of one training run: loss and VRAM graphs, progress, log tail, alerts, sample.

Everything comes from the run's files (events.jsonl, train.log, status.json), followed by a
`RunWatcher` in a worker thread, so the monitor shows the full history of a run opened at any
time (re-attach) and then its live tail. Closing the monitor never touches the run.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, ProgressBar, Static

from loradeck.trainer.cli_hint import command
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.runs.launch_failure import describe_lines
from loradeck.trainer.runs.sample_grid import collect
from loradeck.trainer.runs.states import ACTIVE, RunState
from loradeck.tui import navigation, run_actions
from loradeck.tui.form_hints import form_hint
from loradeck.tui.keys import bind
from loradeck.tui.run_state_text import state_style, stopping_text
from loradeck.tui.run_watch import RunUpdated, RunView, RunWatcher
from loradeck.tui.visibility import visible
from loradeck.tui.widgets.charts import LossChart, VramChart, fmt_duration, fmt_gib
from loradeck.tui.widgets.gpu_table import GpuTable
from loradeck.tui.widgets.image_preview import ImagePreview
from loradeck.tui.worker_errors import ShowsWorkerErrors, show_error

LOG_LINES_SMALL, LOG_LINES_LARGE = 4, 14


def finishing_step(view: RunView) -> int:
    """The step a run asked to stop is still computing (it saves state once that step is done)."""
    step = view.step + 1
    return min(step, view.total_steps) if view.total_steps else step


def status_line(view: RunView, width: int = 200, *, stopping: int | None = None) -> Text:
    """`● running  step 120/600  epoch 2  3.10 it/s  ETA 2m34s  lr 1.0e-04  loss 0.1234`, with the
    least needed parts (lr, then epoch, then speed) left out when `width` is too narrow. `stopping`:
    the step a live run asked to stop is finishing (shown as its state)."""
    parts: list[tuple[str, str, str | None]] = []  # (name, text, style)
    if stopping is not None and view.is_live:
        parts.append(("state", "● " + stopping_text(stopping), state_style(RunState.STOPPING, bold=True)))
    else:
        state = f"● {view.state}" + (f" ({view.state_detail})" if view.state_detail else "")
        parts.append(("state", state, state_style(view.state, bold=True)))
    total = f"/{view.total_steps}" if view.total_steps else ""
    parts.append(("step", f"step {view.step}{total}", None))
    if view.epoch is not None:
        parts.append(("epoch", f"epoch {view.epoch}", None))
    if view.it_per_sec:
        rate = f"{view.it_per_sec:.2f} it/s" if view.it_per_sec >= 1 else f"{1 / view.it_per_sec:.1f} s/it"
        parts.append(("speed", rate, None))
    if view.is_live:
        parts.append(("eta", f"ETA {fmt_duration(view.eta_seconds)}", "bold"))
    if view.lr is not None:
        parts.append(("lr", f"lr {view.lr:.1e}", None))
    if view.loss is not None:
        finite = view.loss == view.loss
        parts.append(("loss", f"loss {view.loss:.4f}" if finite else "loss NaN", None if finite else "bold red"))
    for drop in ("lr", "epoch", "speed", "eta"):
        if sum(len(p[1]) + 2 for p in parts) - 2 <= width:
            break
        parts = [p for p in parts if p[0] != drop]
    text = Text()
    for i, (_, chunk, style) in enumerate(parts):
        text.append(("  " if i else "") + chunk, style=style)
    return text


def device_line(view: RunView) -> Text:
    """What the GPU side knows, said plainly when there is no GPU or no NVML."""
    if view.gpu_available is False:
        text = Text(f"GPU: not monitored: {view.gpu_reason or 'no GPU visible'}", style="yellow")
        if view.device:
            text.append(f"  device {view.device}", style="none")
        if view.rss_peak:
            text.append(f"  RAM peak {fmt_gib(view.rss_peak)}", style="none")
        return text
    if view.gpu_available and view.gpu_total:
        used = view.gpu_used[1][-1] if view.gpu_used[1] else None
        text = Text(f"GPU: {view.gpu_name or '?'}  ")
        if used is not None:
            text.append(f"{fmt_gib(used)} / {fmt_gib(view.gpu_total)} used")
        if view.gpu_proc[1]:
            text.append(f"  this run {fmt_gib(view.gpu_proc[1][-1])}")
        elif view.gpu_proc_visible is False:
            text.append("  (this run's share not visible to NVML)", style="dim")
        if view.gpu_util is not None:
            text.append(f"  util {view.gpu_util:.0f}%")
        text.append(peak_vs_predicted(view))
        return text
    if view.torch_peak[1]:
        return Text(f"torch peak {fmt_gib(view.torch_peak[1][-1])} (no NVML samples yet)").append(
            peak_vs_predicted(view, actual=False))
    if view.device:
        ram = f"  RAM peak {fmt_gib(view.rss_peak)}" if view.rss_peak else ""
        return Text(f"device: {view.device}{ram}")
    return Text("GPU: no samples yet", style="dim")


def peak_vs_predicted(view: RunView, *, actual: bool = True) -> Text:
    """"  peak 4.1 GiB / predicted 4.3 GiB": torch's measured peak against run_started's estimate."""
    if view.predicted_peak is None:
        return Text()
    measured = f"peak {fmt_gib(view.torch_peak[1][-1])} / " if actual and view.torch_peak[1] else ""
    return Text(f"  {measured}predicted {fmt_gib(view.predicted_peak)}", style="dim")


def alerts_text(view: RunView, limit: int = 3) -> Text:
    """Errors first (with their hint, prominently), then the newest warnings; each message once."""
    errors = [a for a in view.alerts if a.level == "error"]
    warnings = [a for a in view.alerts if a.level != "error"]
    shown, seen = [], set()
    for alert in errors[-limit:] + warnings[::-1]:
        key = (alert.level, alert.kind, alert.message, alert.hint)
        if key not in seen:  # a resumed run repeats its start-up warnings: say each once
            seen.add(key)
            shown.append(alert)
    shown = shown[:limit]
    text = Text()
    for alert in shown:
        hint = form_hint(alert.hint)  # the train form's fields, not the CLI's flags
        if text:
            text.append("\n")
        if alert.level == "error":
            text.append(f"✖ {alert.kind.upper()}: ", style="bold red")
            text.append(alert.message)
            if hint:
                text.append("\n  → " + hint, style="bold yellow")
        else:
            text.append("⚠ ", style="yellow")
            text.append(alert.message)
            if hint:
                text.append(f"  ({hint})", style="dim")
    if view.finished_status and view.finished_status != "completed" and view.finished_message:
        text.append(("\n" if text else "") + f"run {view.finished_status}: {view.finished_message}",
                    style="bold")
    return text


def finished_line(view: RunView) -> str:
    """How the run ended and what to do next; for a live run, its newest checkpoint."""
    if view.state == "queued":
        return view.queue_line or "queued"
    if view.is_live:
        if view.last_checkpoint:
            return (f"checkpoint {view.checkpoints} at step {view.last_checkpoint_step}:"
                    f" {Path(view.last_checkpoint).name}")
        return ""
    if view.finished_status == "completed":
        return f"completed: {view.output}" if view.output else "completed"
    if view.state == "crashed":
        return "the trainer process is gone without finishing (crashed): press r to resume from its last state"
    if view.state == "failed" and view.finished_status != "failed" and \
            not any(alert.level == "error" for alert in view.alerts):
        # Failed without saying so: it died at start-up (loradeck.trainer.runs.launch_failure); resume cannot help.
        return f"failed: {describe_lines(view.log_tail)}. Fix that, then start a new run"
    if view.state in ("stopped", "failed"):
        return f"{view.state}: press r to resume from the last saved state"
    return ""


class MonitorScreen(ShowsWorkerErrors, Screen):
    """Watch run `run_id` of `project` (None = the latest run): history, then the live tail."""

    DEFAULT_CSS = """
    MonitorScreen { layout: vertical; }
    MonitorScreen #status { height: 1; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    MonitorScreen #progress-row { height: 1; padding: 0 1; }
    MonitorScreen #run-id { width: auto; padding: 0 1 0 0; text-style: bold; }
    MonitorScreen #progress { width: 1fr; }
    MonitorScreen #progress Bar { width: 1fr; }
    MonitorScreen #device { height: auto; max-height: 2; padding: 0 1; }
    MonitorScreen #main { height: 1fr; }
    MonitorScreen #charts { width: 1fr; }
    MonitorScreen VramChart.empty { height: auto; min-height: 2; max-height: 4; }
    MonitorScreen #side { width: 28; border-left: solid $panel; padding: 0 0 0 1; }
    MonitorScreen #side.hidden { display: none; }
    MonitorScreen #sample-caption { height: auto; max-height: 3; color: $text-muted; }
    MonitorScreen #alerts { height: auto; max-height: 5; padding: 0 1; }
    MonitorScreen #finished { height: auto; padding: 0 1; color: $text-muted; }
    MonitorScreen #log { height: 4; padding: 0 1; color: $text-muted; border-top: solid $panel;
                         text-wrap: nowrap; text-overflow: ellipsis; }
    MonitorScreen #log.large { height: 14; }
    """

    BINDINGS = [bind("monitor.stop"), bind("monitor.resume"), bind("monitor.log"), bind("monitor.runs"),
                bind("monitor.samples"), bind("monitor.sample_prev"), bind("monitor.sample_next"),
                bind("app.back")]

    def __init__(self, project: Project, run_id: str | None = None, *, poll_interval: float = 0.25) -> None:
        super().__init__()
        self.project = project
        self.run_id = run_id
        self.files: RunFiles | None = None
        self.watcher: RunWatcher | None = None
        self.view: RunView | None = None
        self.poll_interval = poll_interval
        self.updates_applied = 0
        self._sample_shown: str | None = None
        self._sample_back = 0  # [ / ]: how many samples before the newest the panel shows (0: follow)
        self._log_lines = LOG_LINES_SMALL
        self._shown: dict[str, str] = {}  # selector -> the text a Static shows now
        self.stopping: int | None = None  # a stop was asked for: the step the run is finishing
        self._forced = False  # a force-stop was done (the stop it overtook then ends quietly)
        self._bindings_state: tuple | None = None  # what the footer's keys were chosen for

    def compose(self) -> ComposeResult:
        yield Static("", id="status")
        with Horizontal(id="progress-row"):
            yield Static("", id="run-id", markup=False)
            yield ProgressBar(id="progress", show_eta=False, total=None)
        yield Static("", id="device")
        with Horizontal(id="main"):
            with Vertical(id="charts"):
                yield LossChart(id="loss-chart")
                yield VramChart(id="vram-chart")
                yield GpuTable(self._run_pid, id="gpu-table")
            with Vertical(id="side", classes="hidden"):
                yield Static("latest sample", id="sample-caption", markup=False)
                yield ImagePreview(getattr(self.app, "preview_mode", "halfblock"), id="sample")
        yield Static("", id="alerts")
        yield Static("", id="finished", markup=False)
        yield Static("", id="log", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"{self.project.name} · monitor"
        try:
            self.files = run_actions.find_run(self.project, self.run_id)
        except LoradeckError as e:
            self.query_one("#status", Static).update(Text("no such run", style="bold red"))
            self.query_one("#finished", Static).update(e.one_line())
            return
        if self.files is None:
            self.query_one("#status", Static).update(Text("no runs yet", style="bold"))
            self.query_one("#finished", Static).update(
                f"{self.project.name} has no runs yet: start one from the train screen (t on the project)"
                f" or with `{command('train', self.project.name)}`")
            return
        self.run_id = self.files.run_id
        self.sub_title = self.run_id
        self.query_one("#run-id", Static).update(self.run_id)
        self.query_one("#status", Static).update(Text(f"{self.run_id}  reading events…"))
        self.watcher = RunWatcher(self.files, self.post_message, interval=self.poll_interval)
        self.run_worker(self.watcher.run, thread=True, exclusive=True, group="run-watch",
                        description=f"watch {self.run_id}", exit_on_error=False)

    def _run_pid(self) -> int | None:
        """The run's launched process (its group and ranks are marked in the GPU table); called from
        the table's worker, possibly before on_mount has found the run."""
        try:
            files = self.files or run_actions.find_run(self.project, self.run_id)
        except LoradeckError:
            return None
        record = (runs.read_launch(files) or {}) if files is not None else {}
        return record.get("pid") if isinstance(record.get("pid"), int) else None

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    @on(RunUpdated)
    def _updated(self, message: RunUpdated) -> None:
        self.view = message.view
        if visible(self):
            self._apply(message.view)
        # else: covered by another screen; on_screen_resume draws the newest view

    def on_screen_resume(self) -> None:
        if self.view is not None:
            self._apply(self.view)

    def _apply(self, view: RunView) -> None:
        self.updates_applied += 1
        if not view.is_live:
            self.stopping = None
        state = (view.state, self.stopping is not None)
        if state != self._bindings_state:
            self._bindings_state = state
            self.refresh_bindings()  # Stop only while it runs, Resume only when it can
        self._set("#status", status_line(view, self.size.width - 2, stopping=self.stopping), fixed=True)
        if view.total_steps:
            self.query_one("#progress", ProgressBar).update(total=view.total_steps, progress=view.step)
        self._set("#device", device_line(view))
        self.query_one(LossChart).show(view)
        vram = self.query_one(VramChart)
        vram.show(view)
        vram.set_class(not vram.traces, "empty")  # a message only: give the room to the loss graph
        self._set("#alerts", alerts_text(view))
        finished = finished_line(view)
        if self.stopping is not None:
            finished = f"{stopping_text(self.stopping)}: it saves its state, then stops; s again: force-stop"
        self._set("#finished", finished)
        self._set("#log", "\n".join(view.log_tail[-self._log_lines:]), fixed=True)
        self._show_sample(view)

    def _set(self, selector: str, content: Text | str, *, fixed: bool = False) -> None:
        """Update a Static only when its text changed; a fixed-height one without a relayout (a
        relayout of the whole screen on every event burst is what would make the monitor sluggish)."""
        plain = content.plain if isinstance(content, Text) else content
        if self._shown.get(selector) == plain:
            return
        self._shown[selector] = plain
        self.query_one(selector, Static).update(content, layout=not fixed)

    def _show_sample(self, view: RunView) -> None:
        if self._sample_back:
            return  # browsing earlier samples with [ / ]: the newest waits until ] comes back to it
        if not view.sample_path or view.sample_path == self._sample_shown or self.files is None:
            return
        path = Path(view.sample_path)
        if not path.is_absolute():
            path = self.files.dir / path
        self._sample_shown = view.sample_path
        self.query_one("#side").remove_class("hidden")
        caption = f"sample @ step {view.sample_step}" if view.sample_step is not None else "latest sample"
        if view.sample_prompt:
            caption += f": {view.sample_prompt}"
        self.query_one("#sample-caption", Static).update(caption)
        self.query_one(ImagePreview).show(path)

    def action_sample_prev(self) -> None:
        self._step_samples(+1)

    def action_sample_next(self) -> None:
        self._step_samples(-1)

    @work(thread=True, exclusive=True, group="sample-history", exit_on_error=False, description="earlier samples")
    def _step_samples(self, delta: int) -> None:
        """Show the sample `delta` places earlier (+) or later (-) than the one shown, in (step, prompt)
        order; back at the newest, the panel follows new samples again."""
        if self.files is None:
            return
        grid = collect(self.files.dir)
        ordered = sorted(grid.cells.items())  # ((step, prompt index), path), oldest first
        self.app.call_from_thread(self._show_sample_at, grid, ordered, delta)

    def _show_sample_at(self, grid, ordered, delta: int) -> None:
        if not ordered:
            self.notify("no samples yet", timeout=2)
            return
        back = max(0, min(self._sample_back + delta, len(ordered) - 1))
        if back == self._sample_back and delta:
            self.notify("oldest sample" if delta > 0 else "newest sample", timeout=1)
        self._sample_back = back
        (step, index), path = ordered[len(ordered) - 1 - back]
        self._sample_shown = str(path)
        self.query_one("#side").remove_class("hidden")
        where = f"{len(ordered) - back}/{len(ordered)}"
        prompt = grid.prompts[index] if index < len(grid.prompts) else ""
        caption = (f"sample {where} @ step {step}" + (" ([ ] browse)" if back else "")
                   + (f": {prompt}" if prompt else ""))
        self.query_one("#sample-caption", Static).update(caption)
        self.query_one(ImagePreview).show(path)

    def action_samples(self) -> None:
        self.app.push_screen(navigation.screen("sample_grid", self.project, self.run_id))

    # -- actions ------------------------------------------------------------------------------
    def action_toggle_log(self) -> None:
        log = self.query_one("#log", Static)
        log.toggle_class("large")
        self._log_lines = LOG_LINES_LARGE if log.has_class("large") else LOG_LINES_SMALL
        if self.view is not None:
            self._set("#log", "\n".join(self.view.log_tail[-self._log_lines:]), fixed=True)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """The footer offers what the run's state allows: Stop while it runs, Resume once it can."""
        state = self.view.state if self.view is not None else None
        if action == "stop_run":
            return self.view is not None and self.view.is_live
        if action == "resume_run":
            return state in ("stopped", "failed", "crashed")
        return True

    def action_stop_run(self) -> None:
        if self.files is None:
            return
        if self.view is not None and not self.view.is_live and self.view.state != "queued":
            self.notify(f"{self.run_id} is not running ({self.view.state})")
            return
        if self.stopping is not None:
            def force(yes: bool | None) -> None:
                if yes:
                    self._run_engine("stop", force=True)

            self.app.push_screen(navigation.screen(
                "confirm", f"Force-stop {self.run_id} now? It is killed without finishing step {self.stopping};"
                " resume continues from its last saved state.", yes_label="Force-stop", danger=True), force)
            return
        if self.view is not None and self.view.state == "queued":
            self.app.push_screen(navigation.screen("confirm", f"Cancel queued run {self.run_id}? It leaves the queue.",
                                                   yes_label="Cancel run", danger=True),
                                 lambda yes: self._run_engine("stop") if yes else None)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.stopping = finishing_step(self.view) if self.view is not None else 1
                if self.view is not None:
                    self._apply(self.view)  # say so at once: the step may take minutes
                self._run_engine("stop")

        self.app.push_screen(navigation.screen(
            "confirm", f"Stop {self.run_id}? It finishes the current step, saves its state and can be resumed.",
            yes_label="Stop", danger=True), answered)

    def action_resume_run(self) -> None:
        if self.files is None:
            return
        if self.view is not None and self.view.is_live:
            self.notify(f"{self.run_id} is already {self.view.state}")
            return
        self._run_engine("resume")

    def action_runs(self) -> None:
        self.app.push_screen(navigation.screen("runs", self.project))

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 2:
            self.app.pop_screen()
        else:
            self.app.exit()

    def _engine_failed(self, what: str, error: BaseException) -> None:
        if what == "stop" and self.files is not None:
            if runs.run_state(self.files) not in ACTIVE:
                return  # it stopped after all (a force-stop overtook this one)
        show_error(self, error, f"Could not {what} {self.run_id}")

    @work(thread=True, group="run-action", exit_on_error=False, description="run action")
    def _run_engine(self, what: str, force: bool = False) -> None:
        # Not exclusive: a force-stop must not cancel the stop it overrides (that one then ends
        # quietly, seeing the run gone).
        assert self.files is not None
        try:
            if force:
                run_actions.stop(self.files, force=True, timeout=0.5)
            else:
                getattr(run_actions, what)(self.files)
        except Exception as e:  # shown to the user; the monitor keeps running
            if what == "stop" and self.watcher is not None:
                self.watcher.poke()
            self.app.call_from_thread(self._engine_failed, what, e)
            return
        if force:
            self._forced = True
        elif what == "stop" and self._forced:
            return  # the stop a force-stop overtook: "force-stopped" said it already
        done = "force-stopped" if force else "stopped" if what == "stop" else f"{what} requested for"
        self.app.call_from_thread(self.notify, f"{done} {self.run_id}")
        if self.watcher is not None:
            self.watcher.poke()
