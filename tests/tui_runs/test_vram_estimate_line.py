"""The train form's live GPU-memory estimate: debounced questions to a warm child, coloured against free memory."""

from __future__ import annotations

import sys

from textual.widgets import Input
from tui_runs_helpers import ScreenApp, text_of

from loradeck.tui.screens.train_form import TrainFormScreen
from loradeck.tui.widgets.vram_estimate import EstimateLine, describe
from tests.waiting import wait_until_async

GiB = 1024 ** 3
EST = {"nvidia_smi_bytes": 5 * GiB, "expected_peak_bytes": 4 * GiB}


def test_the_line_is_green_when_it_fits_red_when_not_and_dim_without_a_gpu():
    roomy = [{"index": 0, "mem_total": 24 * GiB, "mem_used": 2 * GiB}]
    full = [{"index": 0, "mem_total": 8 * GiB, "mem_used": 4 * GiB}]
    fits, short, none = describe(EST, roomy), describe(EST, full), describe(EST, [])
    assert "fits GPU 0 (22.0 GiB free)" in fits.plain and fits.style == "green"
    assert "does not fit GPU 0 (4.0 GiB free)" in short.plain and short.style == "bold red"
    assert none.plain == "GPU memory ≈ 5.0 GiB (peak 4.0 GiB allocated): no GPU here" and none.style == "dim"
    # two GPUs: the run needs room on each, so the tighter one decides
    assert "does not fit GPU 1" in describe(EST, roomy + [dict(full[0], index=1)], n_gpus=2).plain


async def test_the_form_shows_the_estimate_of_the_last_knobs_after_a_burst_of_edits(trainable, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML here: the line says so
    app = ScreenApp(lambda: TrainFormScreen(trainable))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        line = screen.query_one(EstimateLine)
        screen.query_one("#f-resolution", Input).value = "64"
        await wait_until_async(pilot, lambda: line.result is not None, timeout=600, message="the first estimate")
        before, line.result = line.questions_asked, None
        estimator = line.estimator
        child = estimator.pid
        for field, value in (("batch_size", "2"), ("batch_size", "3"), ("rank", "8")):
            screen.query_one(f"#f-{field}", Input).value = value  # one burst of edits
        await pilot.pause()
        await wait_until_async(pilot, lambda: line.result is not None, timeout=600, message="the estimate")
        assert line.questions_asked == before + 1  # the burst was debounced into one question
        assert line.estimator.pid == child and line.estimator.starts == 1  # asked of the same warm child
        assert line.result["config"]["rank"] == 8
        assert line.result["ok"] and line.result["config"]["batch_size"] == 3
        assert line.result["config"]["resolution"] == 64
        assert text_of(line).startswith("GPU memory ≈ ") and text_of(line).endswith("no GPU here")
        screen.query_one("#f-rank", Input).value = "x"  # a problem: no estimate
        await wait_until_async(pilot, lambda: "fix the problems" in text_of(line), message="the estimate to clear")
    assert estimator.pid is None  # the screen's own estimator ended with it


async def test_the_app_keeps_one_warm_estimator_across_train_forms_and_ends_it_on_exit(trainable, monkeypatch):
    from loradeck.tui.app import LoradeckApp

    monkeypatch.setitem(sys.modules, "pynvml", None)
    app = LoradeckApp(trainable.root)
    async with app.run_test(size=(80, 24)) as pilot:
        pids = []
        for visit in range(2):
            app.open_train(trainable)
            await pilot.pause()
            app.screen.query_one("#f-resolution", Input).value = "64"
            line = app.screen.query_one(EstimateLine)
            await wait_until_async(pilot, lambda: line.result is not None, timeout=600, message="the estimate")
            assert line.result["ok"] and line.estimator is app.estimator
            pids.append(app.estimator.pid)
            app.pop_screen()
            await pilot.pause()
        assert pids[0] == pids[1] is not None and app.estimator.starts == 1  # warm for the second form
    assert app.estimator.pid is None  # closed with the app
