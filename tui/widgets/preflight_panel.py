"""The train form's preflight: what `loradeck check` would say about the dataset for the form's current
settings (loradeck.trainer.dataset.preflight), shown before launch, and an offer to re-prep the dataset at the form's
resolution when it was prepared for another one.

The check reads image headers and hashes the prepared images, so it runs in a worker thread, and
only after the form has been still for DEBOUNCE_SECONDS (typing a number changes the config on every
key). A result for settings the form no longer shows is dropped. Re-prep runs `loradeck prep
--resolution N` as a subprocess (loradeck.tui.task_process), exactly as the dataset screen does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Static

from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.dataset import preflight
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import LoradeckError
from loradeck.tui.task_process import run_task, task_argv
from loradeck.tui.worker_errors import ShowsWorkerErrors, show_error

DEBOUNCE_SECONDS = 0.4
# Problems that a prep at the run's resolution fixes (prepared for another resolution, not prepared
# at all, sides the VAE cannot take).
REPREP_CODES = frozenset({"large_images", "stale_prep", "unprepared", "bad_size", "no_images"})
# Engine messages end in a CLI command ("(run: loradeck prep cats --resolution 64)"); in the form
# the offer is a key instead. Project names have no parentheses (loradeck.trainer.dataset.project), so this is exact.
_CLI_ADVICE = re.compile(r"\s*\([^()]*loradeck [^()]*\)")
TUI_ADVICE = {
    "uncaptioned": "caption them on the dataset screen (c)",
    "no_images": "import and prep images on the dataset screen (i, p)",
    "orphan_captions": "see the dataset screen",
}
LEVEL_ORDER = {"error": 0, "warning": 1, "info": 2}
MARK = {"error": ("✖ ", "bold red"), "warning": ("⚠ ", "yellow"), "info": ("· ", "dim")}


def problem_line(problem: dict) -> str:
    """One preflight problem as the form says it: the engine's message without its CLI command."""
    message = _CLI_ADVICE.sub("", problem["message"])
    advice = TUI_ADVICE.get(problem["code"])
    return f"{message} ({advice})" if advice else message


def reprep_offer(report: dict, originals: int | None = None) -> int | None:
    """The resolution to re-prep at, if the report has a problem a prep at it fixes; else None."""
    originals = report.get("originals", 0) if originals is None else originals
    if not originals:
        return None  # nothing to prep from
    if any(p["code"] in REPREP_CODES for p in report["problems"]):
        return int(report["resolution"])
    return None


class PreflightPanel(ShowsWorkerErrors, Horizontal):
    """The preflight report for the config last given to `check()`; `reprep()` re-preps the dataset
    (the screen wires the #reprep button and its key to it, so it can hold its own launch meanwhile)."""

    DEFAULT_CSS = """
    PreflightPanel { height: auto; max-height: 4; padding: 0 1; }
    PreflightPanel > #preflight-lines { width: 1fr; height: auto; max-height: 4; }
    PreflightPanel > #reprep { width: auto; min-width: 24; height: 1; border: none; margin: 0 0 0 1;
                               display: none; }
    PreflightPanel.-offer > #reprep { display: block; }
    """

    @dataclass
    class Prepped(Message):
        """A re-prep from the panel ended (`status`: completed / stopped); the dataset changed."""

        status: str

    def __init__(self, project: Project, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.project = project
        self.report: dict | None = None
        self.offer: int | None = None  # the resolution a re-prep would use, when one is offered
        self.busy = False  # a re-prep is running
        self.checks_done = 0
        self._wanted: TrainConfig | None = None
        self._timer = None

    def compose(self) -> ComposeResult:
        yield Static(Text("checking the dataset for these settings…", style="dim"), id="preflight-lines")
        yield Button("Re-prep (f8)", id="reprep", variant="warning")

    # -- checking -----------------------------------------------------------------------------
    def check(self, cfg: TrainConfig) -> None:
        """Check the dataset for `cfg` once the form has been still for a moment."""
        if cfg == self._wanted and self.report is not None:
            return
        self._wanted = cfg
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(DEBOUNCE_SECONDS, self._start_check)

    def _start_check(self) -> None:
        if self._wanted is not None and not self.busy:
            self._check(self._wanted)

    @work(thread=True, exclusive=True, group="form-preflight", exit_on_error=False, description="preflight")
    def _check(self, cfg: TrainConfig) -> None:
        try:
            report = preflight.check(self.project, cfg)
        except LoradeckError as e:  # e.g. a broken project.toml: the form's problem line names it already
            self.app.call_from_thread(self._not_checked, cfg, e)
            return
        self.app.call_from_thread(self._show, cfg, report)

    def _not_checked(self, cfg: TrainConfig, error: Exception) -> None:
        """A line in the panel, not a modal over the form the user is fixing."""
        if cfg != self._wanted or self.busy:
            return
        self.report, self.offer = None, None
        self.set_class(False, "-offer")
        self.query_one("#preflight-lines", Static).update(Text(f"preflight: not checked ({error})", style="dim"))

    def _show(self, cfg: TrainConfig, report: dict) -> None:
        if cfg != self._wanted or self.busy:
            return  # the form moved on meanwhile: its own check follows
        self.report = report
        self.checks_done += 1
        self.offer = reprep_offer(report)
        text = Text()
        problems = [p for p in report["problems"] if p["code"] != "config"]  # the form shows config problems
        problems.sort(key=lambda p: LEVEL_ORDER.get(p["level"], len(LEVEL_ORDER)))  # notes last: room is short
        for problem in problems:
            mark, style = MARK.get(problem["level"], ("· ", ""))
            if text:
                text.append("\n")
            text.append(mark, style=style)
            text.append(problem_line(problem))
        if not problems:
            text.append("preflight: no problems found in the dataset for these settings", style="dim")
        self.query_one("#preflight-lines", Static).update(text)
        self.query_one("#reprep", Button).label = f"Re-prep at {self.offer} px (f8)" if self.offer else "Re-prep"
        self.set_class(self.offer is not None, "-offer")

    # -- re-prep -------------------------------------------------------------------------------
    def reprep(self) -> bool:
        """Re-prep the dataset at the offered resolution (it becomes the project's [prep] resolution,
        as `loradeck prep --resolution N` makes it); False if nothing is offered or one runs."""
        if self.offer is None or self.busy:
            return False
        self.busy = True
        self.set_class(False, "-offer")
        self.query_one("#preflight-lines", Static).update(Text(f"re-prepping at {self.offer} px…", style="bold"))
        self._reprep(self.offer)
        return True

    @work(thread=True, exclusive=True, group="form-reprep", exit_on_error=False, description="re-prep")
    def _reprep(self, resolution: int) -> None:
        def progress(event: dict) -> None:
            if event.get("type") == "progress":
                line = f"re-prepping at {resolution} px: {event.get('done', 0)}/{event.get('total') or '?'}"
                self.app.call_from_thread(self.query_one("#preflight-lines", Static).update, Text(line, style="bold"))

        try:
            status, _, _ = run_task(task_argv("prep", self.project, "--resolution", str(resolution)), progress)
        except Exception as e:
            self.app.call_from_thread(self._prepped, "failed", e)
            return
        self.app.call_from_thread(self._prepped, status, None)

    def _prepped(self, status: str, error: BaseException | None) -> None:
        self.busy = False
        self.report = None  # the dataset changed: check again
        if error is not None:
            show_error(self, error, "Could not re-prep the dataset")
        self.post_message(self.Prepped(status if error is None else "failed"))
        if self._wanted is not None:
            self._check(self._wanted)
