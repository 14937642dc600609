"""What one node cannot show, with scripted Slurm replies: node failure, out of memory, time out,
preemption (requeued), the node a job runs on, Slurm forgetting a job; and the job wrapper's
time-limit resubmission and its cap, with a scripted sbatch and the protocol-only fake trainer."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time

import pytest

from loradeck.trainer.config.slurm_settings import SlurmSettings
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import EventWriter, read_all
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.slurm import batch as slurm
from loradeck.trainer.slurm import job as slurm_job
from tests.fake_trainer import use_fake_trainer
from tests.slurm.conftest import slurm_run as _slurm_run
from tests.waiting import wait_until


@pytest.mark.parametrize("state,reason,expected", [
    ("NODE_FAIL", "NodeDown", "Slurm: NODE_FAIL (NodeDown), job 1234"),
    ("OUT_OF_MEMORY", "OutOfMemory", "Slurm: OUT_OF_MEMORY (OutOfMemory), job 1234"),
    ("TIMEOUT", "TimeLimit", "Slurm: TIMEOUT (TimeLimit), job 1234"),
    ("CANCELLED", "None", "Slurm: CANCELLED, job 1234"),
])
def test_a_job_that_ended_without_the_trainer_finishing_is_failed_with_slurms_state(
        project, scripted_slurm, state, reason, expected):
    files = _slurm_run(project)
    scripted_slurm(squeue=f"1234|{state}|{reason}|gpu-07\n")
    info = runs.run_info(files)
    assert (info.state, info.message) == ("failed", expected)


def test_a_preempted_job_requeued_by_slurm_reads_queued_with_its_reason(project, scripted_slurm):
    files = _slurm_run(project)
    scripted_slurm(squeue="1234|PENDING|BeginTime|\n")
    info = runs.run_info(files)
    assert (info.state, info.message) == ("queued", "Slurm job 1234, PENDING: BeginTime")
    with pytest.raises(LoradeckError, match="queued in Slurm"):
        runs.check_resumable(files)  # a queued job is not resumed: it starts when Slurm allocates it


def test_a_running_job_names_its_node_until_the_trainer_is_up(project, scripted_slurm):
    files = _slurm_run(project)
    scripted_slurm(squeue="1234|RUNNING|None|gpu-07\n")
    assert runs.run_state_detail(files) == ("starting", "running on node gpu-07 (Slurm job 1234)")


def test_scontrol_answers_when_squeue_has_forgotten_the_job_and_sacct_after_both(project, scripted_slurm):
    files = _slurm_run(project)
    scripted_slurm(squeue="", scontrol="JobId=1234 JobName=x JobState=OUT_OF_MEMORY Reason=OutOfMemory NodeList=gpu-03")
    assert runs.run_state_detail(files) == ("failed", "Slurm: OUT_OF_MEMORY (OutOfMemory), job 1234")
    scripted_slurm(squeue="", scontrol="", sacct="1234|TIMEOUT|gpu-03\n1234.batch|CANCELLED|gpu-03\n")
    assert runs.run_state_detail(files) == ("failed", "Slurm: TIMEOUT, job 1234")
    scripted_slurm(squeue="", scontrol="", sacct=None)
    state, detail = runs.run_state_detail(files)
    assert detail == "Slurm job 1234 (no longer known to Slurm)"


def test_the_run_finished_under_its_newest_job_is_what_the_files_say(project, scripted_slurm):
    files = _slurm_run(project, submitted=time.time() - 60)
    writer = EventWriter(files.events)
    writer.emit("run_finished", status="completed", steps_done=4)
    writer.close()
    scripted_slurm(squeue="1234|COMPLETED|None|gpu-07\n")
    assert runs.run_state_detail(files) == ("completed", "Slurm job 1234")


def test_stop_of_a_queued_run_cancels_the_job_and_reads_stopped(project, scripted_slurm):
    files = _slurm_run(project)
    scripted_slurm(squeue="1234|PENDING|Priority|\n")
    report = runs.stop(files, timeout=5)
    assert report["ok"] and report["state"] == "stopped"
    assert "scancel 1234" in scripted_slurm.log.read_text()
    assert slurm.read_record(files)["stop_requested"]


def test_stop_of_a_running_job_sends_sigterm_through_scancel(project, scripted_slurm):
    files = _slurm_run(project)
    scripted_slurm(squeue="1234|RUNNING|None|gpu-07\n")
    report = runs.stop(files, timeout=0.5)
    assert "scancel --signal=TERM --full 1234" in scripted_slurm.log.read_text()
    assert report["ok"] is False  # the scripted job never stops; the caller is told it is still stopping


def test_the_batch_script_carries_the_settings_and_quotes_paths(tmp_path, project, scripted_slurm):
    files = runs.create_run(project, {"max_train_steps": 4})
    settings = SlurmSettings(partition="gpu", account="art", qos="high", gpus=2, cpus=8, mem="32G",
                             time_limit="4:00:00", signal_seconds=120, setup=["module load cuda"],
                             extra=["--constraint=a100"])
    text = slurm.script_text(files, settings, gpus=1, label="loradeck:toy:x")
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=art", "#SBATCH --qos=high", "#SBATCH --mem=32G",
                 "#SBATCH --gres=gpu:2", "#SBATCH --cpus-per-task=8", "#SBATCH --time=4:00:00",
                 "#SBATCH --signal=B:USR1@120", "#SBATCH --constraint=a100", "#SBATCH --requeue",
                 "module load cuda"):
        assert line in text.splitlines(), line
    spaced = RunFiles(tmp_path / "a folder" / "run 1")
    assert f"cd '{spaced.dir}'" in slurm.script_text(spaced, SlurmSettings(), gpus=1, label="x")


def _wrapper_with_time_limit(files: RunFiles, monkeypatch, cap: int) -> tuple[int, dict]:
    """Run the job wrapper in-process on the fake trainer and send it the pre-time-limit USR1."""
    use_fake_trainer(monkeypatch, step_seconds=0.2)
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    monkeypatch.setenv("SLURMD_NODENAME", "gpu-07")
    record = slurm.read_record(files)
    record["max_resubmits"] = cap
    slurm.record_path(files).write_text(json.dumps(record))

    def time_up():
        # Once the trainer is stepping (its SIGTERM handler is in place), as Slurm would before the limit.
        # A timeout here still sends the signal: the test's own assertions then say what went wrong.
        with contextlib.suppress(AssertionError):
            wait_until(lambda: runs.run_state(files, slurm_aware=False) == "running"
                       and any(e["type"] == "step" for e in read_all(files.events)), 30, message="a first step")
        os.kill(os.getpid(), signal.SIGUSR1)

    threading.Thread(target=time_up, daemon=True).start()
    previous = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        code = slurm_job.main([str(files.dir)])
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code, slurm.read_record(files)


def test_the_wrapper_resubmits_after_the_time_limit_signal(project, scripted_slurm, monkeypatch):
    files = _slurm_run(project)
    files_cfg = files.config.read_text().replace("max_train_steps = 4", "max_train_steps = 200")
    files.config.write_text(files_cfg)
    code, record = _wrapper_with_time_limit(files, monkeypatch, cap=3)
    assert code == 0
    assert runs.run_state(files, slurm_aware=False) == "stopped"
    assert [j["reason"] for j in record["jobs"]] == ["submit", "time_limit"]
    assert record["jobs"][0]["node"] == "gpu-07" and record["resubmits"] == 1
    assert "sbatch --parsable" in scripted_slurm.log.read_text()


def test_the_wrapper_stops_resubmitting_at_the_cap_and_says_so(project, scripted_slurm, monkeypatch):
    files = _slurm_run(project)
    files.config.write_text(files.config.read_text().replace("max_train_steps = 4", "max_train_steps = 200"))
    code, record = _wrapper_with_time_limit(files, monkeypatch, cap=0)
    assert [j["reason"] for j in record["jobs"]] == ["submit"]
    warnings = [json.loads(line) for line in files.events.read_text().splitlines() if '"warning"' in line]
    assert any("resubmission cap (0)" in w["message"] for w in warnings)


def test_bad_slurm_settings_are_refused_with_every_problem_listed(project, cli):

    text = project.settings_file.read_text() + (
        '\n[slurm]\ntime_limit = "four hours"\nmem = "lots"\ncpus = 0\nextra = ["--nodes=2"]\npartitoin = "gpu"\n')
    project.settings_file.write_text(text)
    proc = cli("train", project.name, "--slurm", "--steps", "2")
    assert proc.returncode == 1
    line = proc.stderr.strip()
    assert line.count("\n") == 0
    for part in ("partitoin", "time_limit 'four hours'", "mem 'lots'", "cpus must be >= 1", "multi-node"):
        assert part in line, part
    assert not list(project.runs.glob("*")) if project.runs.exists() else True


def test_slurm_flags_without_slurm_are_refused(project, cli):
    proc = cli("train", project.name, "--partition", "gpu", "--steps", "2")
    assert proc.returncode == 1 and "without --slurm" in proc.stderr


def test_submitting_where_sbatch_is_missing_says_so_and_leaves_no_run(project, cli, tmp_path):
    import os
    import sys

    bin_dir = tmp_path / "empty-bin"
    bin_dir.mkdir()
    proc = cli("train", project.name, "--slurm", "--steps", "2",
               env={"PATH": f"{bin_dir}{os.pathsep}{os.path.dirname(sys.executable)}"})
    assert proc.returncode == 1 and "sbatch is not installed" in proc.stderr
    assert not [d for d in project.runs.iterdir()] if project.runs.exists() else True


def _saved_by_its_trainer(project):
    """A Slurm run submitted a minute ago whose trainer saved and wrote run_finished "stopped"."""
    files = _slurm_run(project, submitted=time.time() - 60)
    writer = EventWriter(files.events)
    writer.emit("run_finished", status="stopped", steps_done=3)
    writer.close()
    return files


def test_a_trainer_that_saved_when_slurm_ended_its_job_reads_failed_with_slurms_state(project, scripted_slurm):
    files = _saved_by_its_trainer(project)
    scripted_slurm(squeue="1234|CANCELLED|None|gpu-07\n")
    state, detail = runs.run_state_detail(files)
    assert state == "failed" and detail.startswith("Slurm: CANCELLED, job 1234")
    slurm.request_stop(files)  # the same files after `loradeck stop`: a stop, as asked
    slurm._cache.clear()
    assert runs.run_state_detail(files)[0] == "stopped"


def test_a_trainer_that_saved_while_slurm_still_ends_its_job_reads_stopping_until_slurm_says(project, scripted_slurm):
    # Slurm's own view lags the trainer's last event: while the job still runs (or completes), the run is
    # on its way out; once Slurm says CANCELLED it is failed, never a transient "stopped" in between.
    files = _saved_by_its_trainer(project)
    scripted_slurm(squeue="1234|COMPLETING|None|gpu-07\n")
    state, detail = runs.run_state_detail(files)
    assert state == "stopping" and "1234 is ending" in detail
    slurm._cache.clear()
    scripted_slurm(squeue="1234|CANCELLED|None|gpu-07\n")
    assert runs.run_state_detail(files)[0] == "failed"
