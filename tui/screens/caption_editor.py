"""The caption editor: one image's caption beside its preview, saved as you type.

Safety rule: a caption that changed on disk since the editor read it is never overwritten without
asking. Every write goes through `caption_store.write_caption(..., if_unchanged_since=signature)`;
a watchdog observer on dataset/ notices outside edits at once, reloads them when there is nothing
unsaved here, and otherwise asks (reload theirs / keep mine). A reload replaces the text as one
undoable edit, so Ctrl+Z brings the editor's own text back.

Each image keeps its own undo history for the editor session: moving to the next image and back
restores it (a caption changed on disk meanwhile comes back as one more undoable edit on top).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SuspendNotSupported
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TextArea
from textual.widgets.text_area import EditHistory

try:  # watching for outside changes is a convenience: the editor works without watchdog
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers import Observer
except ImportError:
    Observer = None

from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.dataset import caption_store
from loradeck.trainer.dataset.caption_ops import tag_frequency, with_trigger
from loradeck.trainer.dataset.caption_store import CaptionConflict, Signature
from loradeck.trainer.dataset.project import Project
from loradeck.trainer.dataset.view import DatasetEntry
from loradeck.tui import navigation
from loradeck.tui.keys import bind
from loradeck.tui.quiet import no_blinking
from loradeck.tui.widgets.image_preview import ImagePreview
from loradeck.tui.worker_errors import ShowsWorkerErrors

AUTOSAVE_DELAY = 0.6  # seconds of quiet typing before the caption is written
DISK_SETTLE = 0.25    # seconds without file events before an outside change is looked at


def current_fragment(text: str, cursor_offset: int) -> str:
    """The tag being typed: the text between the last comma before the cursor and the cursor."""
    before = text[:cursor_offset]
    return before[before.rfind(",") + 1:].lstrip()


def suggest_tags(fragment: str, frequencies: list[tuple[str, int]], present: set[str],
                 limit: int = 3) -> list[tuple[str, int]]:
    """Known tags that start with `fragment` (case-insensitive), most frequent first, not already used."""
    if not fragment:
        return []
    low = fragment.lower()
    return [(t, n) for t, n in frequencies
            if t.lower().startswith(low) and t.lower() != low and t not in present][:limit]


def editor_command() -> list[str]:
    """$VISUAL, else $EDITOR, else vi, split like a shell would."""
    return shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")



class CaptionFileTouched(Message):
    """A caption file in dataset/ was written, moved or deleted by someone else (watchdog thread)."""

class CaptionEditorScreen(ShowsWorkerErrors, Screen[str | None]):
    """Edit the captions of `entries`, starting at `index`; dismisses with the last image's name."""

    BINDINGS = [bind("app.back", show=True), bind("editor.next"), bind("editor.prev"), bind("editor.undo"),
                bind("editor.redo"), bind("editor.trigger"), bind("editor.replace"),
                bind("editor.external"), bind("editor.save"), bind("editor.complete")]

    def __init__(self, project: Project, entries: list[DatasetEntry], index: int = 0):
        super().__init__()
        self.project = project
        self.entries = entries
        self.index = max(0, min(index, len(entries) - 1))
        self.ext = ".txt"
        self.trigger = ""
        self.saved_text = ""
        self.signature: Signature | None = None
        self.frequencies: list[tuple[str, int]] = []
        self.suggestions: list[tuple[str, int]] = []
        self.conflict_open = False
        self._autosave_timer = None
        self._disk_timer = None
        self._observer = None
        self._histories: dict[str, tuple[str, EditHistory]] = {}  # image -> (text when left, its undo)

    # layout
    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="editor-body"):
            yield ImagePreview(getattr(self.app, "preview_mode", "halfblock"), id="editor-preview")
            with Vertical(id="editor-right"):
                yield Static("", id="editor-name", markup=False)
                yield TextArea("", id="editor-text", soft_wrap=True, show_line_numbers=False)
                yield Static("", id="editor-suggest", markup=False)
                yield Static("", id="editor-state", markup=False)
                yield DataTable(id="editor-tags", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)  # fits 80 columns with the palette hint (see tui/keys.py)

    def on_mount(self) -> None:
        s = settings_mod.load(self.project.settings_file)
        self.ext, self.trigger = s.caption_extension, s.project.trigger_word
        self.sub_title = f"{self.project.name}: captions"
        tags = self.query_one("#editor-tags", DataTable)
        tags.add_column("Images", width=6)
        tags.add_column("Tag")
        self._load_frequencies()
        self._start_watching()
        self.load_entry(self.index)
        self.query_one("#editor-text", TextArea).focus()
        no_blinking(self)

    def on_unmount(self) -> None:
        if self._observer is not None:
            self._observer.stop()

    @property
    def entry(self) -> DatasetEntry:
        return self.entries[self.index]

    @property
    def caption_file(self) -> Path:
        return caption_store.caption_path(self.entry.path, self.ext)

    @property
    def area(self) -> TextArea:
        return self.query_one("#editor-text", TextArea)

    def dirty(self) -> bool:
        return caption_store.normalize(self.area.text) != caption_store.normalize(self.saved_text)

    def load_entry(self, index: int) -> None:
        """Show image `index` with its caption as on disk (a fresh undo history)."""
        self.index = index
        self.signature = Signature.of(self.caption_file)
        self.saved_text = caption_store.read_caption(self.entry.path, self.ext) or ""
        kept = self._histories.pop(self.entry.name, None)
        if kept is None:
            self.area.load_text(self.saved_text)
        else:
            # Back on an image edited earlier in this session: its own undo history again.
            left_text, history = kept
            self.area.load_text(left_text)
            self.area.history = history
            if left_text != self.saved_text:  # changed on disk since: one more undoable edit
                history.checkpoint()
                self.area.replace(self.saved_text, (0, 0), self.area.document.end)
        self.area.move_cursor(self.area.document.end)  # typing adds to the end ...
        # ... but the view starts at the top: the trigger word and first tags are what to check first.
        self.area.call_after_refresh(self.area.scroll_home, animate=False)
        self.query_one("#editor-name", Static).update(
            f"{self.index + 1}/{len(self.entries)}  {self.entry.name}  →  {self.caption_file.name}")
        self._set_state("saved" if self.signature else "no caption yet")
        self.query_one(ImagePreview).show(self.entry.path)

    def _set_state(self, text: str) -> None:
        self.query_one("#editor-state", Static).update(text)

    # typing, autosave, suggestions
    @on(TextArea.Changed, "#editor-text")
    def _changed(self) -> None:
        self._update_suggestions()
        if self._autosave_timer is not None:
            self._autosave_timer.stop()
        if self.dirty():
            self._set_state("modified …")
            self._autosave_timer = self.set_timer(AUTOSAVE_DELAY, self._autosave)

    @on(TextArea.SelectionChanged, "#editor-text")
    def _moved(self) -> None:
        self._update_suggestions()

    def _update_suggestions(self) -> None:
        area = self.area
        offset = area.document.get_index_from_location(area.cursor_location)
        text = area.text
        present = set(caption_store.split_tags(text))
        self.suggestions = suggest_tags(current_fragment(text, offset), self.frequencies, present)
        line = ""
        if self.suggestions:
            line = "Tab → " + " · ".join(f"{t} ({n})" for t, n in self.suggestions)
        self.query_one("#editor-suggest", Static).update(line)

    def action_complete_tag(self) -> None:
        if not self.suggestions or self.focused is not self.area:
            self.focus_next()
            return
        tag = self.suggestions[0][0]
        area = self.area
        offset = area.document.get_index_from_location(area.cursor_location)
        fragment = current_fragment(area.text, offset)
        start = area.document.get_location_from_index(offset - len(fragment))
        area.replace(tag, start, area.cursor_location)

    def _autosave(self) -> None:
        # Emptying a caption removes its file; autosave leaves that to an explicit save or a move,
        # so an undo that passes through the empty text never deletes anything on its own.
        if not self.area.text.strip() and self.signature is not None:
            self._set_state("empty: Ctrl+S (or moving on) removes the caption file")
            return
        self.save()

    def save(self, *, force: bool = False) -> bool:
        """Write the caption if it changed; False when a conflict stopped it (the user is asked)."""
        if self._autosave_timer is not None:
            self._autosave_timer.stop()
            self._autosave_timer = None
        if not self.dirty() and not force:
            return True
        text = self.area.text
        expected = Signature.of(self.caption_file) if force else self.signature
        try:
            self.signature = caption_store.write_caption(self.entry.path, text, self.ext,
                                                         if_unchanged_since=expected)
        except CaptionConflict:
            self._set_state("conflict: changed on disk")
            self._ask_conflict()
            return False
        except OSError as e:
            self.app.show_error(e, title=f"saving {self.caption_file.name}")
            return False
        self.saved_text = text
        self._set_state("saved ✓" if self.signature else "saved (caption removed: blank)")
        return True

    def action_save(self) -> None:
        self.save()

    # outside changes
    def _start_watching(self) -> None:
        if Observer is None:
            return
        screen = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):
                screen.watched_event(event)

        observer = Observer()
        try:
            observer.schedule(Handler(), str(self.project.dataset), recursive=False)
            observer.daemon = True
            observer.start()
        except OSError:
            return  # no watching (e.g. inotify limits): writes are still conflict-checked
        self._observer = observer

    def watched_event(self, event) -> None:
        """A file event in dataset/, on watchdog's thread. It must never wait for the UI: the UI may be
        in on_unmount, waiting in observer.stop() for the lock this thread holds while dispatching (with
        call_from_thread here that deadlock froze the app). post_message is thread-safe and returns."""
        paths = {getattr(event, "src_path", ""), getattr(event, "dest_path", "")}
        if any(os.fsdecode(p).endswith(self.ext) for p in paths if p):
            self.post_message(CaptionFileTouched())

    def on_caption_file_touched(self, _message: CaptionFileTouched) -> None:
        self.schedule_disk_check()

    def schedule_disk_check(self) -> None:
        """Check the file once its writer is done: a shell `>` or a plain editor truncates, then
        writes, and the empty file in between must not be taken for the new caption."""
        if not self.is_mounted:
            return
        if self._disk_timer is not None:
            self._disk_timer.stop()
        self._disk_timer = self.set_timer(DISK_SETTLE, self.check_disk)

    def check_disk(self) -> None:
        """Compare the open caption with the file on disk; reload or ask when someone else changed it."""
        if not self.is_mounted or self.conflict_open:
            return
        now = Signature.of(self.caption_file)
        if now == self.signature:
            return
        if not self.dirty():
            self._take_disk_text()
            self.notify(f"{self.caption_file.name} changed on disk: reloaded", timeout=4)
        else:
            self._ask_conflict()

    def _take_disk_text(self) -> None:
        text = caption_store.read_caption(self.entry.path, self.ext) or ""
        self.signature = Signature.of(self.caption_file)
        area = self.area
        if area.text != text:
            area.replace(text, (0, 0), area.document.end)  # undoable: Ctrl+Z brings ours back
        self.saved_text = text
        self._set_state("reloaded from disk")

    def _ask_conflict(self) -> None:
        if self.conflict_open:
            return
        self.conflict_open = True

        def answered(choice: str | None) -> None:
            self.conflict_open = False
            if choice == "reload":
                self._take_disk_text()
            elif choice == "keep":
                self.save(force=True)
            else:
                self._set_state("conflict: not saved (Ctrl+S to decide)")

        disk = caption_store.read_caption(self.entry.path, self.ext)
        self.app.push_screen(navigation.screen("conflict", self.caption_file.name, disk, self.area.text), answered)

    # navigation
    def _go(self, index: int) -> None:
        if not 0 <= index < len(self.entries):
            self.notify("first image" if index < 0 else "last image", timeout=1)
            return
        if self.save():
            self._keep_history()
            self.load_entry(index)

    def _keep_history(self) -> None:
        """Put this image's undo history aside (the text area gets a fresh one for the next image)."""
        old = self.area.history
        self._histories[self.entry.name] = (self.area.text, old)
        self.area.history = EditHistory(max_checkpoints=old.max_checkpoints, checkpoint_timer=old.checkpoint_timer,
                                        checkpoint_max_characters=old.checkpoint_max_characters)

    def action_next_image(self) -> None:
        self._go(self.index + 1)

    def action_prev_image(self) -> None:
        self._go(self.index - 1)

    def action_back(self) -> None:
        if self.save():
            self.dismiss(self.entry.name)

    # editing helpers
    def action_undo(self) -> None:
        self.area.undo()

    def action_redo(self) -> None:
        self.area.redo()

    def action_insert_trigger(self) -> None:
        if not self.trigger:
            self.notify("this project has no trigger word (set [project] trigger_word)", severity="warning")
            return
        area = self.area
        new = with_trigger(area.text.strip(), self.trigger)
        if new != area.text:
            area.replace(new, (0, 0), area.document.end)

    @on(DataTable.RowSelected, "#editor-tags")
    def _tag_chosen(self, event: DataTable.RowSelected) -> None:
        tag = str(event.row_key.value)
        area = self.area
        tags = caption_store.split_tags(area.text)
        if tag not in tags:
            area.replace(caption_store.join_tags(tags + [tag]), (0, 0), area.document.end)
        area.focus()

    @work(thread=True, exclusive=True, group="tag-frequency", exit_on_error=False, description="tag frequencies")
    def _load_frequencies(self) -> None:
        frequencies = tag_frequency(self.project)
        self.app.call_from_thread(self._show_frequencies, frequencies)

    def _show_frequencies(self, frequencies: list[tuple[str, int]]) -> None:
        self.frequencies = frequencies
        table = self.query_one("#editor-tags", DataTable)
        table.clear()
        for tag, count in frequencies[:500]:
            table.add_row(Text(str(count), justify="right"), tag, key=tag)

    def action_find_replace(self) -> None:
        if not self.save():
            return
        def closed(changed: int | None) -> None:
            if changed:
                self._take_disk_text()
                self._load_frequencies()

        self.app.push_screen(navigation.screen("find_replace", self.project), closed)

    def action_open_external(self) -> None:
        if not self.save():
            return
        path = self.caption_file
        try:
            with self.app.suspend():
                code = edit_externally(path)
        except SuspendNotSupported:
            self.notify("this terminal cannot hand over to $EDITOR", severity="error")
            return
        except OSError as e:
            self.app.show_error(e, title="$EDITOR")
            return
        self.refresh()
        if code != 0:
            self.notify(f"{editor_command()[0]} exited with status {code}", severity="warning")
        self._take_disk_text()


def edit_externally(path: Path) -> int:
    """Run the user's editor on `path` and wait; returns its exit status."""
    return subprocess.call([*editor_command(), str(path)])
