"""The run watcher: events folded into what the monitor draws, and coalesced for the UI."""

from __future__ import annotations

import math

from tui_runs_helpers import GIB, T0, gpu_events, make_run, run_started, step_events, write_events

from loradeck.tui import run_watch
from loradeck.tui.run_watch import RunTracker, RunUpdated, RunWatcher


def test_loss_series_keeps_raw_and_a_smoothed_line_that_lags_behind():
    tracker = RunTracker("r")
    tracker.feed([{"type": "step", "time": T0 + s, "step": s, "total_steps": 4, "epoch": 1, "loss": v, "lr": 1e-4}
                  for s, v in enumerate([1.0, 0.0, 0.0, 0.0], start=1)])
    view = tracker.view("running", [])
    assert view.loss_raw == ([1, 2, 3, 4], [1.0, 0.0, 0.0, 0.0])
    xs, ys = view.loss_smooth
    assert xs == [1, 2, 3, 4] and ys[0] == 1.0  # seeded with the first value, not pulled to zero
    assert ys == sorted(ys, reverse=True) and 0.7 < ys[-1] < 0.75  # 0.9**3


def test_eta_and_speed_come_from_the_recent_steps():
    tracker = RunTracker("r")
    tracker.feed(step_events(1, 20, 100, dt=0.5))
    view = tracker.view("running", [])
    assert math.isclose(view.it_per_sec, 2.0)
    assert math.isclose(view.eta_seconds, 80 / 2.0)
    assert view.step == 20 and view.total_steps == 100 and view.epoch == 2
    assert tracker.view("completed", []).eta_seconds is None  # no ETA once the run is not live


def test_nan_loss_is_shown_but_not_plotted():
    tracker = RunTracker("r")
    tracker.feed(step_events(1, 3, 10))
    tracker.feed([{"type": "step", "time": T0 + 9, "step": 4, "total_steps": 10, "epoch": 1, "loss": "nan",
                   "lr": 1e-4}])
    view = tracker.view("running", [])
    assert view.loss != view.loss  # NaN, as the trainer wrote it
    assert len(view.loss_raw[0]) == 3


def test_errors_keep_their_kind_and_hint():
    tracker = RunTracker("r")
    tracker.feed([{"type": "error", "time": T0, "kind": "oom", "message": "CUDA out of memory",
                   "hint": "enable gradient checkpointing"},
                  {"type": "warning", "time": T0, "message": "xformers missing"}])
    alerts = tracker.view("failed", []).alerts
    assert [(a.level, a.kind, a.hint) for a in alerts] == [("error", "oom", "enable gradient checkpointing"),
                                                            ("warning", "warning", "")]


def test_gpu_samples_fill_vram_series_and_missing_nvml_is_reported():
    tracker = RunTracker("r")
    tracker.feed([run_started("r")] + gpu_events(5, proc=False) + step_events(1, 2, 10))
    view = tracker.view("running", [])
    assert view.gpu_available and view.gpu_total == 12 * GIB
    assert len(view.gpu_used[0]) == 5 and view.gpu_proc == ([], [])
    assert view.gpu_proc_visible is False
    assert view.torch_peak[1] == [int(3.4 * GIB)] * 2
    tracker.feed([{"type": "gpu", "time": T0 + 9, "available": False, "reason": "NVML not found"}])
    assert tracker.view("running", []).gpu_reason == "NVML not found"


def test_a_resumed_run_is_live_again_after_its_earlier_run_finished():
    tracker = RunTracker("r")
    tracker.feed([run_started("r")] + step_events(1, 5, 10) + [{"type": "run_finished", "time": T0 + 3,
                                                                 "status": "stopped"}])
    assert tracker.view("stopped", []).finished_status == "stopped"
    tracker.feed([run_started("r", t=T0 + 100)] + step_events(6, 7, 10, t0=T0 + 100))
    view = tracker.view("running", [])
    assert view.finished_status is None and view.step == 7
    assert view.loss_raw[0][-3:] == [5, 6, 7]  # history kept across the resume


def test_long_runs_are_thinned_to_a_bounded_number_of_points(monkeypatch):
    monkeypatch.setattr(run_watch, "MAX_POINTS", 100)
    tracker = RunTracker("r")
    tracker.feed(step_events(1, 1000, 1000, mem=False))
    xs, _ = tracker.view("running", []).loss_raw
    assert 50 <= len(xs) <= 100
    assert xs[0] == 1 and xs[-1] > 900  # the whole run is still covered


def test_malformed_events_are_skipped_not_fatal():
    tracker = RunTracker("r")
    tracker.feed([{"type": "step", "step": "x"}, {"type": "gpu"}, {"type": "sample"}, {"type": "mystery"}]
                 + step_events(1, 2, 10))
    assert tracker.view("running", []).step == 2 and tracker.events_seen == 6


def test_watcher_catches_up_on_ten_thousand_events_with_few_ui_messages(project, monkeypatch):
    monkeypatch.setattr(run_watch, "CATCH_UP_POST_EVERY", 0.0)  # post at every bite
    events = [run_started("r1")] + step_events(1, 10_000, 10_000, mem=False)
    files = make_run(project, "r1", events, state="running")
    posted = []
    watcher = RunWatcher(files, posted.append)
    view = watcher.poll_once()
    assert view is not None and view.step == 10_000 and view.events_seen == 10_001
    # Intermediate views while catching up, one per bite of the file: nowhere near one per event.
    assert 5 < len(posted) < 100 and all(isinstance(m, RunUpdated) for m in posted)
    assert [m.view.step for m in posted] == sorted(m.view.step for m in posted)
    assert watcher.poll_once() is None  # nothing new: nothing to redraw


def test_watcher_sees_appended_events_and_a_half_written_line_only_when_complete(project):
    files = make_run(project, "r1", [run_started("r1")] + step_events(1, 3, 10), state="running")
    watcher = RunWatcher(files, lambda m: None)
    assert watcher.poll_once().step == 3
    with open(files.events, "a") as fh:
        fh.write('{"type": "step", "time": 1, "step": 4, "total_steps": 10, "epoch": 1, "loss": 0.1, ')
    assert watcher.poll_once() is None or watcher.tracker.step == 3
    with open(files.events, "a") as fh:
        fh.write('"lr": 0.0001}\n')
    assert watcher.poll_once().step == 4


def test_updates_replace_older_updates_waiting_in_the_queue():
    a, b = RunUpdated(run_watch.RunView("r")), RunUpdated(run_watch.RunView("r"))
    assert a.can_replace(b)


def test_log_tail_keeps_the_last_lines_and_the_end_of_carriage_return_progress(project):
    files = make_run(project, "r1", [], state="running",
                     log="".join(f"line {i}\n" for i in range(300)) + "10%\r50%\r100%\n")
    tail = run_watch.LogTail(files.log).read()
    assert tail[-1] == "100%" and tail[-2] == "line 299" and len(tail) == run_watch.LOG_TAIL_LINES
    write_events(files, step_events(1, 1, 1))


def test_a_run_resumed_from_an_earlier_state_replaces_the_steps_it_redoes():
    tracker = RunTracker("r")
    tracker.feed(step_events(1, 10, 20))
    tracker.feed(step_events(8, 12, 20, t0=T0 + 100))  # state saved at step 7; steps 8-10 were lost
    xs, _ = tracker.view("running", []).loss_raw
    assert xs == list(range(1, 13))


def test_chart_columns_take_min_and_max_of_the_points_they_cover():
    from loradeck.tui.widgets.charts import _columns

    cols = _columns([0, 1, 2, 3, 4, 5], [5, 1, 7, 2, 2, 9], 0, 5, 3)
    assert cols == [(1, 5), (2, 7), (2, 9)]
    assert _columns([], [], 0, 1, 4) == [None] * 4


def test_the_device_line_sets_the_measured_peak_against_run_starteds_prediction():
    from loradeck.tui.screens.monitor import device_line

    tracker = RunTracker("r")
    started = dict(run_started("r"), vram_estimate={"expected_peak_bytes": 3 * GIB, "nvidia_smi_bytes": 4 * GIB,
                                                    "breakdown": {}})
    steps = step_events(1, 3, 10)
    for e in steps:
        e.update(mem_allocated=2 * GIB, mem_peak=int(2.5 * GIB))
    tracker.feed([started, *gpu_events(2), *steps])
    view = tracker.view("running", [])
    assert view.predicted_peak == 3 * GIB
    line = device_line(view).plain
    assert line.endswith("peak 2.5G / predicted 3.0G"), line
    assert RunTracker("x").view("running", []).predicted_peak is None  # older runs: no prediction, no text
