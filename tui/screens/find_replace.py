"""Batch find / replace over every caption of a project, with a preview of each change first.

The preview is the engine's dry run (loradeck.trainer.dataset.caption_ops.replace_text(dry_run=True)); Apply is only
enabled once a preview is shown for the current inputs, and the engine re-checks every file's
signature while writing, so a caption edited meanwhile is skipped and reported, never clobbered.
"""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, DataTable, Input, Static

from loradeck.trainer.dataset.caption_ops import compile_pattern, replace_text
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.errors import LoradeckError
from loradeck.tui.quiet import no_blinking
from loradeck.tui.widgets.tick_box import TickBox
from loradeck.tui.worker_errors import ShowsWorkerErrors

CONTEXT = 16  # characters shown before the first change
READY = "Enter previews every change; then Apply (ctrl+a)."


def pattern_problem(find: str, *, regex: bool, ignore_case: bool) -> str | None:
    """Why `find` cannot be searched for (an invalid regular expression), or None."""
    if not find or not regex:
        return None
    try:
        compile_pattern(find, regex=True, ignore_case=ignore_case)
    except LoradeckError as e:
        return e.one_line()
    return None


def change_cell(before: str | None, after: str) -> Text:
    """Two lines: the old caption (red) and the new one (green), starting a little before the first
    difference (long captions would otherwise hide it off screen), the changed part in bold."""
    before = before or ""
    start = 0
    while start < min(len(before), len(after)) and before[start] == after[start]:
        start += 1
    end = 0
    while end < min(len(before), len(after)) - start and before[-1 - end] == after[-1 - end]:
        end += 1
    cut = max(0, start - CONTEXT)
    text = Text()
    for sign, line, style in (("- ", before, "red"), ("+ ", after, "green")):
        if text:
            text.append("\n")
        text.append(sign + ("…" if cut else ""), style=style)
        text.append(line[cut:start], style=style)
        text.append(line[start:len(line) - end], style=f"bold {style} reverse")
        text.append(line[len(line) - end:], style=style)
    return text


class FindReplaceScreen(ShowsWorkerErrors, ModalScreen[int]):
    """Dismisses with the number of captions changed."""

    BINDINGS = [
        Binding("escape", "close", "Close", id="replace.close"),
        # priority: an Input would take ctrl+a as "home"
        Binding("ctrl+a", "apply", "Apply", id="replace.apply", priority=True),
    ]

    def __init__(self, project: Project, find: str = "", replace: str = ""):
        super().__init__()
        self.project = project
        self.initial = (find, replace)
        self.preview_for: tuple | None = None   # the inputs the shown preview belongs to
        self.previewed = 0
        self.changed = 0

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="replace-box"):
            yield Static(f"Find / replace in {self.project.name}'s captions", classes="modal-title")
            with Horizontal(id="replace-inputs"):
                yield Input(self.initial[0], placeholder="find", id="replace-find")
                yield Input(self.initial[1], placeholder="replace with (empty removes)", id="replace-with")
            with Horizontal(id="replace-options"):
                yield TickBox("regex", id="replace-regex")
                yield TickBox("ignore case", id="replace-case")
            yield Static(READY, id="replace-status", markup=False)
            yield DataTable(id="replace-preview", cursor_type="row")
            with Horizontal(classes="buttons"):
                yield Button("Preview ⏎", id="replace-preview-btn")
                yield Button("Apply ^a", id="replace-apply", variant="warning", disabled=True)
                yield Button("Close", id="replace-close")

    def on_mount(self) -> None:
        self.query_one("#replace-preview", DataTable).add_columns("Image", "Change")
        self.query_one("#replace-find", Input).focus()
        no_blinking(self)

    def _inputs(self) -> tuple:
        return (self.query_one("#replace-find", Input).value, self.query_one("#replace-with", Input).value,
                self.query_one("#replace-regex", Checkbox).value, self.query_one("#replace-case", Checkbox).value)

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _inputs_changed(self) -> None:
        # A preview is only good for the inputs it was made with: once they change, the old rows
        # would show changes that Apply no longer makes, so they go.
        inputs = self._inputs()
        self.query_one("#replace-apply", Button).disabled = inputs != self.preview_for
        if self.preview_for is not None and inputs != self.preview_for:
            self.preview_for = None
            self.query_one("#replace-preview", DataTable).clear()
        problem = pattern_problem(inputs[0], regex=inputs[2], ignore_case=inputs[3])
        self._status(problem or READY, error=bool(problem))

    def _status(self, text: str, *, error: bool = False) -> None:
        status = self.query_one("#replace-status", Static)
        status.update(text)
        status.set_class(error, "form-error")

    @on(Input.Submitted)
    @on(Button.Pressed, "#replace-preview-btn")
    def preview(self) -> None:
        find, _, regex, ignore_case = self._inputs()
        if not find:
            self._status("type what to find first", error=True)
            return
        problem = pattern_problem(find, regex=regex, ignore_case=ignore_case)
        if problem:
            self._status(problem, error=True)  # in place: the user is typing, a modal would interrupt
            return
        self._run(self._inputs(), dry_run=True)

    @on(Button.Pressed, "#replace-apply")
    def action_apply(self) -> None:
        if self._inputs() != self.preview_for:
            self.query_one("#replace-status", Static).update("preview first (Enter)")
            return
        self._run(self.preview_for, dry_run=False)

    @work(thread=True, exclusive=True, group="replace", exit_on_error=False, description="find/replace")
    def _run(self, inputs: tuple, dry_run: bool) -> None:
        find, replacement, regex, ignore_case = inputs
        try:
            result = replace_text(self.project, find, replacement, regex=regex, ignore_case=ignore_case,
                                  dry_run=dry_run)
        except LoradeckError as e:  # e.g. a replacement naming a group the pattern lacks: said in place
            self.app.call_from_thread(self._refused, inputs, e.one_line())
            return
        self.app.call_from_thread(self._show, inputs, result.to_dict(), dry_run)

    def _refused(self, inputs: tuple, message: str) -> None:
        if inputs == self._inputs():
            self.query_one("#replace-preview", DataTable).clear()
            self.preview_for = None
            self.query_one("#replace-apply", Button).disabled = True
            self._status(message, error=True)

    def _show(self, inputs: tuple, result: dict, dry_run: bool) -> None:
        if dry_run and inputs != self._inputs():
            return  # typed on while the preview was made: it belongs to inputs no longer there
        table = self.query_one("#replace-preview", DataTable)
        table.clear()
        for change in result["changes"]:
            table.add_row(change["image"], change_cell(change["before"], change["after"]), height=2)
        for image, why in result["skipped"]:
            table.add_row(image, Text(f"skipped: {why}", style="yellow"))
        n, skipped = len(result["changes"]), len(result["skipped"])
        status = self.query_one("#replace-status", Static)
        status.remove_class("form-error")
        apply_button = self.query_one("#replace-apply", Button)
        if dry_run:
            self.preview_for = inputs if n else None
            self.previewed = n
            status.update(f"{n} caption(s) would change, {result['unchanged']} unchanged"
                          + (f", {skipped} skipped" if skipped else "") + (". Apply: ctrl+a" if n else "."))
            apply_button.disabled = not n
        else:
            self.changed += n
            self.preview_for = None
            apply_button.disabled = True
            status.update(f"applied: {n} caption(s) changed" + (f", {skipped} skipped" if skipped else ""))
            self.notify(f"find/replace changed {n} caption(s)")

    @on(Button.Pressed, "#replace-close")
    def action_close(self) -> None:
        self.dismiss(self.changed)
