"""loradeck.tui.run_actions: resume right after a run reports stopped, while its trainer is still exiting."""

from __future__ import annotations

import threading

from tui_runs_helpers import T0, live_status, make_run, run_started, step_events

from loradeck.tui import run_actions
from tests.fake_trainer import lookalike_trainer


def test_resume_waits_for_a_trainer_still_exiting_after_it_reported_stopped(project, monkeypatch):
    from loradeck.trainer.runs import lifecycle as runs

    run_dir = project.run_dir("exiting")
    # looks like the run's trainer to the engine (its command line names the run) and exits in 1.5 s
    proc = lookalike_trainer(run_dir, seconds=1.5, start_new_session=True)  # in its own session, as runs are
    try:
        files = make_run(project, "exiting", [run_started("exiting")] + step_events(1, 3, 10) + [
            {"type": "run_finished", "time": T0 + 4, "status": "stopped"}], state="stopped")
        live_status(files, proc.pid, state="stopped")  # its last heartbeat, written just after it started
        assert runs.lingering_pid(files) == proc.pid
        seen = []
        monkeypatch.setattr(runs, "resume", lambda f, detach: seen.append(runs.lingering_pid(f)))
        reaper = threading.Thread(target=proc.wait)  # reaped at once, as the trainer's parent would
        reaper.start()
        run_actions.resume(files)
        reaper.join()
        assert seen == [None]  # the engine was asked only once the old trainer had gone
    finally:
        proc.kill()
        proc.wait()
