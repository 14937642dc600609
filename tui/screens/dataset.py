"""The dataset screen: a project's prepared images with their caption status, a filter, a preview,
and the dataset work (import, prep, BLIP captioning or WD14 tags, preflight, find/replace)."""

from __future__ import annotations

import time

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from loradeck.trainer.captions.blip_captioning import default_caption_model
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.config.project_settings import TaggerSection
from loradeck.trainer.dataset.caption_journal import undo_last
from loradeck.trainer.dataset.caption_store import read_caption, split_tags
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.dataset.view import CAPTIONED, DatasetEntry, DatasetListing, list_dataset, load_captions
from loradeck.trainer.errors import LoradeckError
from loradeck.tui import navigation
from loradeck.tui.form_hints import caption_hint
from loradeck.tui.keys import bind
from loradeck.tui.messages import TaskDone, TaskEvent
from loradeck.tui.quiet import no_blinking
from loradeck.tui.task_process import TaskProcess, run_task, task_argv
from loradeck.tui.widgets.image_list import ImageList
from loradeck.tui.widgets.image_preview import ImagePreview
from loradeck.tui.widgets.task_bar import TaskBar
from loradeck.tui.worker_errors import ShowsWorkerErrors

TASK_TITLES = {"prep": "Prep", "caption": "Captioning"}
LIVE_RELOAD_SECONDS = 1.0


def caption_args(settings, choice=None) -> list[str]:
    """Extra `loradeck caption` arguments for a project: the model chosen in the caption dialog
    (a loradeck.tui.screens.caption_dialog.CaptionChoice; else the engine reads project.toml) and the trigger
    word as an (idempotent) prefix."""
    args = []
    if choice is not None and choice.model:
        args += ["--model", choice.model]
    if settings.project.trigger_word:
        args += ["--prefix", settings.project.trigger_word]
    return args


SYNTHETIC_TAGGER_MODEL = "synthetic:wd14-tiny"


def tagger_args(settings) -> list[str]:
    """`loradeck caption` arguments for WD14 tags: thresholds and the rest come from [tagger]; a
    synthetic project that kept the default tagger gets the offline tiny one."""
    args = ["--tagger", "wd14"]
    if settings.project.base_model.startswith("synthetic:") and settings.tagger.model == TaggerSection().model:
        args += ["--model", SYNTHETIC_TAGGER_MODEL]
    if settings.project.trigger_word:
        args += ["--prefix", settings.project.trigger_word]
    return args


def parse_filter(text: str) -> tuple[str, list[str], str | None]:
    """`text` → (free text, tags, status). Tokens `tag:NAME` and `status:missing|captioned|ignored`;
    everything else is searched for in names and captions."""
    words, tags, status = [], [], None
    for token in text.split():
        low = token.lower()
        if low.startswith("tag:") and len(token) > 4:
            tags.append(token[4:].replace("_", " ").lower())
        elif low.startswith("status:") and len(token) > 7:
            status = low[7:]
        else:
            words.append(token)
    return " ".join(words).lower(), tags, status


def filter_entries(entries: list[DatasetEntry], captions: dict[str, str] | None, text: str,
                   missing_only: bool) -> list[DatasetEntry]:
    """The entries matching the filter text (see parse_filter) and the missing-only toggle."""
    words, tags, status = parse_filter(text)
    out = []
    for e in entries:
        if missing_only and e.status == CAPTIONED:
            continue
        if status and not e.status.startswith(status):
            continue
        caption = (captions or {}).get(e.name, "")
        if tags:
            have = {t.lower() for t in split_tags(caption)}
            if not all(t in have for t in tags):
                continue
        if words and words not in e.name.lower() and words not in caption.lower():
            continue
        out.append(e)
    return out


class DatasetScreen(ShowsWorkerErrors, Screen):
    BINDINGS = [bind("app.back", show=True), bind("dataset.edit"), bind("dataset.filter"), bind("dataset.missing"),
                bind("dataset.prep"), bind("dataset.caption"), bind("dataset.cancel"),
                bind("dataset.check"), bind("dataset.replace"), bind("dataset.import"),
                bind("dataset.preview"), bind("dataset.train"), bind("dataset.runs"),
                bind("dataset.refresh"), bind("dataset.undo")]

    def __init__(self, project: Project):
        super().__init__()
        self.project = project
        self.settings = None
        self.listing = DatasetListing()
        self.captions: dict[str, str] | None = None  # read on demand for text / tag filters
        self.missing_only = False
        self.job: TaskProcess | None = None
        self.task_name: str | None = None
        self._failed = 0
        self._preview_timer = None
        self._listing_failed = False
        self._keep_next: str | None = None
        self._last_live_reload = 0.0
        self._cancel_requested = False

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="dataset-body"):
            with Vertical(id="dataset-left"):
                yield Input(placeholder="/ filter (tag:x status:missing)", id="dataset-filter")
                yield ImageList(id="dataset-list")
            with Vertical(id="dataset-right"):
                yield ImagePreview(getattr(self.app, "preview_mode", "halfblock"), id="dataset-preview")
                yield Static("", id="dataset-caption", markup=False)
        yield Static("", id="dataset-summary", markup=False)
        yield TaskBar(id="dataset-task")
        # Compact, with the palette hint: what the footer leaves out is there and in F1 (tui/keys.py).
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.sub_title = self.project.name
        self.query_one(ImageList).focus()
        self.reload()
        no_blinking(self)

    def on_screen_resume(self) -> None:
        # Back from another screen: files may have changed. Not after a failed read, or closing
        # its error modal would read (and fail) again, forever; F5 retries.
        if self.job is None and not self._listing_failed:
            self.reload()

    # listing
    def action_refresh(self) -> None:
        self._listing_failed = False
        self.reload()

    def reload(self, keep: str | None = None) -> None:
        # A newer reload cancels this one before it starts (exclusive): the image to keep the
        # cursor on is remembered on the screen, not in this call.
        if keep:
            self._keep_next = keep
        self._reload_worker()

    @work(thread=True, exclusive=True, group="dataset-list", exit_on_error=False, description="reading dataset")
    def _reload_worker(self) -> None:
        self._listing_failed = True
        settings = settings_mod.load(self.project.settings_file)
        listing = list_dataset(self.project, settings.caption_extension)
        needs_text = bool(self.query_one("#dataset-filter", Input).value.strip())
        captions = load_captions(listing.entries, listing.caption_extension) if needs_text else None
        self.app.call_from_thread(self._show_listing, settings, listing, captions)

    def _show_listing(self, settings, listing: DatasetListing, captions) -> None:
        self.settings, self.listing, self.captions = settings, listing, captions
        self._listing_failed = False
        keep, self._keep_next = self._keep_next, None
        self._apply_filter(keep)

    def _apply_filter(self, keep: str | None = None) -> None:
        image_list = self.query_one(ImageList)
        current = keep or (image_list.current.name if image_list.current else None)
        text = self.query_one("#dataset-filter", Input).value
        shown = filter_entries(self.listing.entries, self.captions, text, self.missing_only)
        image_list.set_entries(shown, keep=current)
        self._update_summary(len(shown))

    def _update_summary(self, shown: int) -> None:
        lst = self.listing
        parts = [f"{lst.images} images", f"{lst.captioned} captioned", f"{lst.missing} missing"]
        if lst.ignored:
            parts.append(f"{lst.ignored} ignored ext")
        if shown != lst.images:
            parts.insert(0, f"showing {shown}")
        if lst.images == 0 and lst.originals:
            parts.append(f"{lst.originals} originals not prepared: press p")
        elif lst.originals > lst.images:
            parts.append(f"+{lst.originals - lst.images} to prep (p)")
        elif lst.images == 0:
            parts.append("import images with i")
        if self.settings and self.settings.project.trigger_word:
            parts.append(f"trigger: {self.settings.project.trigger_word}")
        self.query_one("#dataset-summary", Static).update(" · ".join(parts))  # may wrap: a new layout

    @on(Input.Changed, "#dataset-filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if event.value.strip() and self.captions is None:
            self.reload()  # needs caption texts, read in the worker
        else:
            self._apply_filter()

    @on(Input.Submitted, "#dataset-filter")
    def _filter_done(self) -> None:
        self.query_one(ImageList).focus()

    def action_focus_filter(self) -> None:
        self.query_one("#dataset-filter", Input).focus()

    def action_toggle_missing(self) -> None:
        self.missing_only = not self.missing_only
        self.notify("showing images without a caption" if self.missing_only else "showing all images",
                    timeout=2)
        self._apply_filter()

    def action_back(self) -> None:
        if self.focused is self.query_one("#dataset-filter", Input):
            self.query_one(ImageList).focus()
            return
        if self.task_name is None:
            self.app.pop_screen()
            return
        def answered(yes: bool | None) -> None:
            if yes:
                self.app.pop_screen()  # unmounting cancels the task (it keeps what it finished)

        title = TASK_TITLES[self.task_name]
        self.app.push_screen(navigation.screen("confirm", f"{title} is running. Stop it and leave this project?",
                                               yes_label="Stop and leave"), answered)

    # selection → caption + preview
    @on(ImageList.Highlighted)
    def _highlighted(self, event: ImageList.Highlighted) -> None:
        entry = event.entry
        caption = ""
        if entry is not None:
            ext = self.listing.caption_extension
            text = read_caption(entry.path, ext)
            if text:
                caption = text
            elif entry.other_caption:
                caption = f"(only {entry.other_caption}: training reads {ext} captions)"
            else:
                caption = "(no caption)"
        self.query_one("#dataset-caption", Static).update(caption, layout=False)  # fixed height
        if self._preview_timer is not None:
            self._preview_timer.stop()
        # Wait for the cursor to settle: holding an arrow key must not decode every image passed.
        self._preview_timer = self.set_timer(0.06, lambda: self.query_one(ImagePreview).show(
            entry.path if entry else None))

    @on(ImageList.Chosen)
    def _chosen(self) -> None:
        self.action_edit()

    def action_cycle_preview(self) -> None:
        mode = self.query_one(ImagePreview).cycle_mode()
        self.notify(f"preview: {mode}", timeout=2)

    def action_edit(self) -> None:
        image_list = self.query_one(ImageList)
        if image_list.current is None:
            self.notify("no image selected", severity="warning")
            return
        def closed(last_name: str | None) -> None:
            self.captions = None
            self.reload(keep=last_name)

        self.app.push_screen(navigation.screen("caption_editor", self.project, list(image_list.entries),
                                               image_list.cursor), closed)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """Cancel shows only while a task runs; prep and captioning leave the footer meanwhile (the
        room goes to Cancel, so F1 Help stays visible at 80 columns)."""
        if action == "cancel_task":
            return self.task_name is not None
        if action in ("prep", "caption") and self.task_name is not None:
            return False
        return True

    # dataset work
    def action_import_folder(self) -> None:
        self.app.push_screen(navigation.screen("import", self.project), lambda _: self.reload())

    def action_prep(self) -> None:
        """Ask the resolution (default the project's [prep] resolution), then prep at it."""
        def chosen(resolution: int | None) -> None:
            if resolution is not None:
                self._start_task("prep", ["--resolution", str(resolution)])

        self.app.push_screen(navigation.screen("prep", self.project), chosen)

    def action_caption(self) -> None:
        if self.settings is None:
            return
        if self.task_name is not None:
            self._start_task("caption", [])  # says what is running
            return
        def model_chosen(choice) -> None:
            if choice is None or self.settings is None:
                return
            self._remember_caption_model(choice.model)
            self._start_task("caption", caption_args(self.settings, choice))

        def captioner_chosen(captioner: str | None) -> None:
            if not captioner or self.settings is None or self.task_name is not None:
                return
            if captioner == "wd14":  # thresholds and the rest: project.toml [tagger]
                self._start_task("caption", tagger_args(self.settings))
            else:  # BLIP: which model (a local folder offline), then it starts
                self.app.push_screen(navigation.screen("caption_dialog", self.project.name, self.settings),
                                     model_chosen)

        self.app.push_screen(navigation.screen("caption_choice"), captioner_chosen)
    def _remember_caption_model(self, model: str) -> None:
        """Save the chosen model as project.toml [caption] model (removed when it is the default)."""
        value = None if model == default_caption_model(self.settings) else model
        if (value or "") == self.settings.caption.model:
            return
        try:
            self.settings = settings_mod.update(self.project.settings_file, "caption", {"model": value})
        except (LoradeckError, OSError) as e:  # the run still uses the model; only remembering failed
            self.notify(f"could not save the model in project.toml: {e}", severity="warning")

    def _start_task(self, name: str, extra: list[str]) -> None:
        if self.task_name is not None:
            self.notify(f"{TASK_TITLES[self.task_name]} is running: wait, or cancel it with x",
                        severity="warning")
            return
        self.task_name = name
        self._cancel_requested = False
        self.refresh_bindings()
        self._failed = 0
        self.query_one(TaskBar).begin(TASK_TITLES[name])
        self._run_task(name, task_argv(name, self.project, *extra))

    @work(thread=True, exclusive=True, group="dataset-task", exit_on_error=False, description="dataset task")
    def _run_task(self, name: str, argv: list[str]) -> None:
        def started(task: TaskProcess) -> None:
            self.job = task
            if self._cancel_requested:
                task.cancel()

        try:
            status, failures, final = run_task(argv, lambda ev: self.post_message(TaskEvent(name, ev)), started)
        except LoradeckError as e:
            self.app.call_from_thread(self._task_ended)
            if name != "caption":
                raise
            raise LoradeckError(caption_hint(str(e)), hint=caption_hint(e.hint) if e.hint else None) from e
        except BaseException:
            self.app.call_from_thread(self._task_ended)
            raise
        self.post_message(TaskDone(name, status, failures, final))

    def on_task_event(self, message: TaskEvent) -> None:
        event = message.event
        kind = event.get("type")
        title = TASK_TITLES.get(message.task, message.task)
        if kind == "item_failed":
            self._failed += 1
        elif kind in ("progress", "task_started"):
            self.query_one(TaskBar).progress(title, event.get("done", 0), event.get("total"),
                                             str(event.get("item") or event.get("message") or ""), self._failed)
            # Let the list show new images and captions as they land, about once a second.
            now = time.monotonic()
            if event.get("done") and now - self._last_live_reload > LIVE_RELOAD_SECONDS:
                self._last_live_reload = now
                self.captions = None
                self.reload()

    def on_task_done(self, message: TaskDone) -> None:
        self._task_ended()
        title = TASK_TITLES.get(message.task, message.task)
        text = f"{title} {message.status}"
        if message.failures:
            reasons = "; ".join(f"{f.get('item')}: {f.get('reason')}" for f in message.failures[:3])
            more = f" (+{len(message.failures) - 3} more)" if len(message.failures) > 3 else ""
            text += f": {len(message.failures)} failed: {reasons}{more}"
        self.notify(text, severity="warning" if message.failures or message.status != "completed"
                    else "information", timeout=8)
        self.captions = None
        self.reload()

    def _task_ended(self) -> None:
        self.job, self.task_name = None, None
        self.refresh_bindings()
        self.query_one(TaskBar).end()

    def action_cancel_task(self) -> None:
        if self.task_name is None:
            self.notify("no task is running", timeout=2)
            return
        self._cancel_requested = True
        if self.job is not None:
            self.job.cancel()  # else the task is cancelled as soon as its process exists
        self.query_one("#task-label", Static).update(
            f"{TASK_TITLES.get(self.task_name, '')}: stopping after the current item …")

    def action_preflight(self) -> None:
        self.app.push_screen(navigation.screen("preflight", self.project))

    def action_find_replace(self) -> None:
        def closed(changed: int | None) -> None:
            if changed:
                self.captions = None
                self.reload()

        self.app.push_screen(navigation.screen("find_replace", self.project), closed)

    def action_undo_batch(self) -> None:
        """Ctrl+Z: undo the last batch caption edit (loradeck.trainer.dataset.caption_journal), one level per press."""
        if self.task_name is not None:
            self.notify(f"{TASK_TITLES[self.task_name]} is running: undo once it has finished",
                        severity="warning")
            return
        self._undo_worker()

    @work(thread=True, exclusive=True, group="dataset-undo", exit_on_error=False, description="undo batch")
    def _undo_worker(self) -> None:
        result = undo_last(self.project)  # "nothing to undo" arrives in the error modal
        self.app.call_from_thread(self._undone, result)

    def _undone(self, result) -> None:
        text = f"undid {result.label}: {len(result.restored)} caption(s) restored"
        if result.conflicts:
            shown = ", ".join(result.conflicts[:3]) + (" …" if len(result.conflicts) > 3 else "")
            text += f"; {len(result.conflicts)} edited since, kept: {shown}"
        self.notify(text, severity="warning" if result.conflicts else "information", timeout=8)
        self.captions = None
        self.reload()

    def action_train(self) -> None:
        self.app.open_train(self.project)

    def action_runs(self) -> None:
        self.app.open_runs(self.project)

    def on_unmount(self) -> None:
        if self.job is not None:
            self.job.cancel()
