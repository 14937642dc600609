"""Dataset screen: caption status listing, filters, preview, prep and captioning subprocesses with
progress and cancel, preflight."""

from __future__ import annotations

import shutil
import sys
import textwrap

from textual.widgets import Input

from loradeck.trainer.dataset.caption_store import read_caption
from loradeck.trainer.dataset.demo import write_images
from loradeck.trainer.dataset.importer import import_paths
from loradeck.trainer.dataset.project import create_project
from loradeck.trainer.dataset.view import CAPTIONED, EMPTY, IGNORED_EXTENSION, list_dataset
from loradeck.tui.messages import TaskDone, TaskEvent
from loradeck.tui.screens.dataset import filter_entries, parse_filter
from loradeck.tui.task_process import run_task
from loradeck.tui.widgets.image_list import ImageList
from loradeck.tui.widgets.image_preview import HalfBlocks, ImagePreview
from tests.tui.conftest import make_app, wait_screen
from tests.waiting import wait_until_async


def test_listing_reports_captioned_missing_and_ignored_extension(demo):
    (demo.dataset / "shape_02.caption").write_text("only a kohya .caption file\n")
    (demo.dataset / "shape_05.txt").write_text("")  # empty: training sees no caption
    listing = list_dataset(demo)
    status = {e.name: e.status for e in listing.entries}
    assert status["shape_00.png"] == CAPTIONED
    assert status["shape_02.png"] == IGNORED_EXTENSION
    assert status["shape_05.png"] == EMPTY
    assert (listing.images, listing.captioned, listing.ignored) == (12, 8, 1)


def test_fast_listing_agrees_with_caption_ops_on_every_status(demo):
    from loradeck.trainer.dataset import caption_ops

    (demo.dataset / "shape_00.txt").write_text(" \r\n\t ")          # blank: not a caption
    (demo.dataset / "shape_01.txt").write_bytes(b"\xef\xbb\xbf\n")   # a BOM and a newline
    (demo.dataset / "shape_02.caption").write_text("")                # ignored, even empty
    (demo.dataset / "shape_03.txt").write_text("")
    (demo.dataset / "shape_03.caption").write_text("kohya text")
    (demo.dataset / "shape_05.txt").write_text("")
    fast = {e.name: e.status for e in list_dataset(demo).entries}
    slow = {row.image: row.status for row in caption_ops.list_captions(demo)}
    assert fast == slow
    assert (fast["shape_00.png"], fast["shape_01.png"]) == (EMPTY, EMPTY)
    assert (fast["shape_02.png"], fast["shape_03.jpg"]) == (IGNORED_EXTENSION, IGNORED_EXTENSION)


def test_filter_by_text_tag_status_and_missing_toggle(demo):
    from loradeck.trainer.dataset.view import load_captions

    listing = list_dataset(demo)
    captions = load_captions(listing.entries, ".txt")
    assert parse_filter("tag:red_circle blue status:missing") == ("blue", ["red circle"], "missing")
    missing = filter_entries(listing.entries, captions, "", missing_only=True)
    assert {e.name for e in missing} == {"shape_02.png", "shape_05.png", "shape_08.png", "shape_11.jpg"}
    some_tag = next(t for t in captions["shape_00.png"].split(", ") if t != "zxq style")
    tagged = filter_entries(listing.entries, captions, "tag:" + some_tag.replace(" ", "_"), False)
    assert tagged and all(some_tag in captions[e.name] for e in tagged)
    texted = filter_entries(listing.entries, captions, "shape_0", False)
    assert len(texted) == 10


async def test_dataset_screen_lists_previews_and_filters(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        image_list = screen.query_one(ImageList)
        await wait_until_async(pilot, lambda: len(image_list.entries) == 12, message="listing")
        await wait_until_async(pilot, lambda: screen.query(HalfBlocks), message="half-block preview")
        assert "shape_00.png" in str(screen.query_one("#preview-info").render())
        assert "12 images · 8 captioned · 4 missing" in str(screen.query_one("#dataset-summary").render())
        await pilot.press("down", "down")
        await pilot.pause()
        assert str(screen.query_one("#dataset-caption").render()) == "(no caption)"
        await pilot.press("m")
        await wait_until_async(pilot, lambda: len(image_list.entries) == 4, message="missing-only filter")
        await pilot.press("m", "slash", *"ring")
        await wait_until_async(pilot, lambda: 0 < len(image_list.entries) < 12, message="text filter")
        assert all("ring" in (read_caption(e.path) or "") or "ring" in e.name for e in image_list.entries)
        await pilot.press("escape")  # leaves the filter field, not the screen
        assert type(app.screen).__name__ == "DatasetScreen"
        preview = screen.query_one(ImagePreview)
        await pilot.press("v")  # half-blocks -> text-only
        await wait_until_async(pilot, lambda: preview.mode == "text" and not screen.query(HalfBlocks),
                               message="text-only preview")


async def test_prep_runs_as_a_subprocess_with_progress(root):
    project = create_project("fresh", root, base_model="synthetic:tiny")
    from loradeck.trainer.config import project_settings as settings

    settings.update(project.settings_file, "prep", {"resolution": 64, "bucket_min_side": 64,
                                                     "bucket_max_side": 128, "bucket_step": 64})
    write_images(root / "src", 5)
    import_paths(project, [root / "src"])
    seen = []
    app = make_app(root, open_name="fresh")
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        await wait_until_async(pilot,
                               lambda: "originals not prepared" in str(screen.query_one("#dataset-summary").render()))
        await pilot.press("p")
        await wait_screen(pilot, "PrepDialog")
        await pilot.press("enter")  # the dialog starts at the project's [prep] resolution (64)
        await wait_until_async(pilot, lambda: any(isinstance(m, TaskDone) for m in seen),
                               timeout=60, message="prep done")
        image_list = screen.query_one(ImageList)
        await wait_until_async(pilot, lambda: len(image_list.entries) == 5, message="listing refreshed")
    done = next(m for m in seen if isinstance(m, TaskDone))
    assert done.task == "prep" and done.status == "completed"
    events = [m.event for m in seen if isinstance(m, TaskEvent)]
    assert events[0]["type"] == "task_started"
    assert any(e["type"] == "progress" and e.get("done") for e in events)


STOPPABLE_TASK = textwrap.dedent("""
    import json, signal, sys, time
    stop = False
    def handler(*_):
        global stop
        stop = True
    signal.signal(signal.SIGTERM, handler)
    print(json.dumps({"type": "task_started", "time": 0, "task": "fake", "total": 1000}), flush=True)
    for i in range(1000):
        if stop:
            print(json.dumps({"type": "task_finished", "time": 0, "task": "fake", "status": "stopped"}), flush=True)
            sys.exit(130)
        print(json.dumps({"type": "progress", "time": 0, "task": "fake", "done": i + 1, "total": 1000}), flush=True)
        time.sleep(0.01)
""")


def test_cancel_sends_sigterm_and_the_task_reports_stopped():
    got = []
    holder = {}

    def on_event(event):
        got.append(event)
        if event.get("done") == 20:
            holder["task"].cancel()

    status, failures, final = run_task([sys.executable, "-c", STOPPABLE_TASK, "fake"], on_event,
                                       lambda t: holder.__setitem__("task", t))
    assert status == "stopped" and final["status"] == "stopped"
    assert 20 <= max(e.get("done", 0) for e in got) < 1000


def test_a_failing_task_raises_its_error_line():
    import pytest

    from loradeck.trainer.errors import LoradeckError

    script = "import sys; print('error: no project named nope', file=sys.stderr); sys.exit(1)"
    with pytest.raises(LoradeckError, match="no project named nope"):
        run_task([sys.executable, "-c", script, "prep"], lambda e: None)


async def test_blip_caption_subprocess_fills_missing_captions_and_can_be_cancelled(root, demo):
    seen = []
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        await wait_until_async(pilot, lambda: len(screen.query_one(ImageList).entries) == 12)
        # Cancel: SIGTERM stops it cleanly, no error modal.
        await pilot.press("c", "b")  # BLIP, then the model to use; Enter starts
        await wait_screen(pilot, "CaptionDialog")
        await pilot.press("enter", "x")  # cancelled at once, even before its process is up
        await wait_until_async(pilot, lambda: any(isinstance(m, TaskDone) for m in seen), timeout=60,
                               message="cancelled task ends")
        assert next(m for m in seen if isinstance(m, TaskDone)).status == "stopped"
        assert type(app.screen).__name__ == "DatasetScreen"
        seen.clear()
        await pilot.press("c", "enter")  # BLIP is the focused choice
        await wait_screen(pilot, "CaptionDialog")
        await pilot.press("enter")
        await wait_until_async(pilot, lambda: any(isinstance(m, TaskDone) for m in seen), timeout=120,
                               message="captioning done")
        done = next(m for m in seen if isinstance(m, TaskDone))
        assert done.status == "completed", done
        await wait_until_async(pilot, lambda: "12 captioned" in str(screen.query_one("#dataset-summary").render()))
    assert read_caption(demo.dataset / "shape_02.png")  # was missing
    assert read_caption(demo.dataset / "shape_02.png").startswith("zxq style")  # trigger as prefix


async def test_preflight_report_is_shown(root, demo):
    shutil.copy(demo.dataset / "shape_00.txt", demo.dataset / "shape_02.caption")
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_screen(pilot, "DatasetScreen")
        await pilot.press("k")
        screen = await wait_screen(pilot, "PreflightScreen")
        await wait_until_async(pilot, lambda: screen.report is not None, message="preflight report")
        text = str(screen.query_one("#preflight-text").render())
        assert "12 images" in text and "steps:" in text
        assert "ignore" in text  # the .caption-vs-.txt trap is reported
        await pilot.press("escape")
        await wait_screen(pilot, "DatasetScreen")


async def test_filter_field_types_letters_instead_of_running_actions(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        await pilot.press("slash", "p", "c")
        assert screen.query_one("#dataset-filter", Input).value == "pc"
        assert screen.job is None and screen.task_name is None


async def test_a_failing_subprocess_ends_in_the_error_modal(root, demo, monkeypatch):
    # A real project's captioner is not in the (empty, offline) model cache: the subprocess fails
    # with the engine's one-line error, which the modal shows; the screen stays usable.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(root.parent / "empty-hf-home"))
    from loradeck.trainer.config import project_settings as settings

    settings.update(demo.settings_file, "project", {"base_model": "stable-diffusion-v1-5/stable-diffusion-v1-5"})
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        await wait_until_async(pilot, lambda: len(screen.query_one(ImageList).entries) == 12)
        await pilot.press("c", "b")  # BLIP
        await wait_screen(pilot, "CaptionDialog")
        await pilot.press("enter")
        error = await wait_screen(pilot, "ErrorScreen", timeout=90)
        assert "blip" in error.message.lower() and "cache" in error.message
        await pilot.press("escape")
        await wait_screen(pilot, "DatasetScreen")
        assert screen.task_name is None  # ready for the next task


async def test_leaving_while_a_task_runs_asks_first(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        await wait_until_async(pilot, lambda: len(screen.query_one(ImageList).entries) == 12)
        await pilot.press("c", "b")  # BLIP
        await wait_screen(pilot, "CaptionDialog")
        await pilot.press("enter")
        await wait_until_async(pilot, lambda: screen.job is not None, message="task process up")
        job = screen.job
        await pilot.press("escape")
        await wait_screen(pilot, "ConfirmScreen")
        await pilot.press("n")
        await wait_screen(pilot, "DatasetScreen")
        assert job.proc.poll() is None  # still running
        await pilot.press("escape")
        await wait_screen(pilot, "ConfirmScreen")
        await pilot.press("y")
        await wait_screen(pilot, "ProjectsScreen")
        await wait_until_async(pilot, lambda: job.cancelled, message="task cancelled")
    assert job.proc.wait(timeout=60) is not None


def _footer_line(screen) -> str:
    return "".join(segment.text for segment in screen._compositor.render_strips()[-1])


async def test_help_key_stays_in_the_footer_at_80_columns_even_while_a_task_runs(root, demo):
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        await wait_until_async(pilot, lambda: screen.query_one(ImageList).entries, message="images listed")
        await pilot.pause()  # the summary under the list may wrap: one layout more
        idle = _footer_line(screen)
        assert "f1 Help" in idle and "t Train" in idle and "p Prep" in idle
        screen.task_name = "caption"  # as while captioning runs
        screen.refresh_bindings()
        busy = await wait_until_async(pilot, lambda: "x Cancel" in (line := _footer_line(screen)) and line,
                                      message="the footer of a running task")
        assert "x Cancel" in busy and "f1 Help" in busy and "p Prep" not in busy
        screen.task_name = None
        screen.refresh_bindings()
        await pilot.press("enter")
        editor = await wait_screen(pilot, "CaptionEditorScreen")
        await wait_until_async(pilot, lambda: "f1 Help" in _footer_line(editor), message="the editor's footer")


async def test_caption_action_offers_wd14_tags_which_fill_missing_captions(root, demo):
    seen = []
    from loradeck.trainer.dataset.project import dataset_images

    missing = [p.name for p in dataset_images(demo) if not read_caption(p)]
    app = make_app(root, open_name="demo")
    async with app.run_test(size=(80, 24), message_hook=seen.append) as pilot:
        screen = await wait_screen(pilot, "DatasetScreen")
        await wait_until_async(pilot, lambda: len(screen.query_one(ImageList).entries) == 12)
        await pilot.press("c")
        await wait_screen(pilot, "CaptionChoiceScreen")
        await pilot.press("w")
        await wait_until_async(pilot, lambda: any(isinstance(m, TaskDone) for m in seen), timeout=120,
                               message="tagging done")
        done = next(m for m in seen if isinstance(m, TaskDone))
        assert done.task == "caption" and done.status == "completed", done
    started = next(m.event for m in seen if isinstance(m, TaskEvent) and m.event["type"] == "task_started")
    assert started["model"] == "synthetic:wd14-tiny" and started["total"] == len(missing)
    tagged = [read_caption(demo.dataset / name) for name in missing]
    assert any(tagged) and all(t.startswith("zxq style, ") for t in tagged if t)
    assert all("_" not in t.replace("^_^", "") for t in tagged if t)  # booru underscores became spaces
