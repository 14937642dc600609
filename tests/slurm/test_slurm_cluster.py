"""Runs as jobs of a real single-node Slurm cluster: complete, pending reason, stop/resume, time-limit
resubmission with exact resume, and a job killed from Slurm."""

from __future__ import annotations

import json
import subprocess

import pytest
from safetensors.torch import load_file

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.slurm import batch as slurm
from tests.slurm.conftest import runs_json, wait_for_run

pytestmark = pytest.mark.slow


def _submit(cli, project, *flags: str) -> tuple[str, str]:
    proc = cli("train", project.name, "--slurm", "--resolution", "64", "--json", *flags)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["state"] == "queued" and data["slurm_job"].isdigit()
    return data["run_id"], data["slurm_job"]


def test_a_submitted_run_completes_on_the_node_and_reports_where_it_ran(cli, slurm_project, slurm_cluster):
    run_id, job = _submit(cli, slurm_project, "--steps", "3")
    files = RunFiles(slurm_project.runs / run_id)
    script = (files.dir / "slurm.sbatch").read_text()
    assert "#SBATCH --cpus-per-task=1" in script and "#SBATCH --signal=B:USR1@50" in script
    assert "-m loradeck.trainer.slurm.job" in script
    done = wait_for_run(cli, slurm_project, run_id, lambda r: r["state"] in ("completed", "failed", "crashed"),
                        what="the job to finish")
    assert done["state"] == "completed", done
    assert done["step"] == 3 and done["output"]
    assert f"Slurm job {job} on {slurm_cluster.node}" in done["message"]
    record = slurm.read_record(files)
    assert record["jobs"][0]["node"] == slurm_cluster.node


def test_a_pending_run_shows_slurms_reason_and_stop_cancels_it(cli, slurm_project, slurm_cluster):
    cpus = subprocess.run(["sinfo", "-h", "-o", "%c"], capture_output=True, text=True).stdout.strip()
    blocker = slurm_cluster.sbatch_wrap("sleep 300", f"--cpus-per-task={cpus}", "--mem=100")
    try:
        run_id, job = _submit(cli, slurm_project, "--steps", "3")
        queued = wait_for_run(cli, slurm_project, run_id,
                              lambda r: r["state"] == "queued" and "PENDING" in r["message"]
                              and not r["message"].endswith(": waiting"),  # Slurm's reason is None at first
                              timeout=60, what="the job to be pending with Slurm's reason")
        assert queued["message"].startswith(f"Slurm job {job}, PENDING: ")
        assert queued["message"].split(": ", 1)[1] in ("Resources", "Priority")
        proc = cli("stop", slurm_project.name, run_id, "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["state"] == "stopped"
        after = [r for r in runs_json(cli, slurm_project) if r["run_id"] == run_id][0]
        assert after["state"] == "stopped" and "cancelled while queued" in after["message"]
    finally:
        subprocess.run(["scancel", blocker])


def test_stop_saves_state_through_scancel_and_resume_resubmits_to_the_end(cli, slurm_project):
    run_id, job = _submit(cli, slurm_project, "--steps", "400")
    wait_for_run(cli, slurm_project, run_id, lambda r: r["state"] == "running" and r["step"] >= 2,
                 what="training to begin")
    proc = cli("stop", slurm_project.name, run_id, "--json", "--timeout", "240")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["state"] == "stopped" and report["slurm_job"] == job
    files = RunFiles(slurm_project.runs / run_id)
    assert any(files.state.iterdir()), "stop through Slurm saves resumable state"
    stopped_at = [r for r in runs_json(cli, slurm_project) if r["run_id"] == run_id][0]["step"]
    assert 2 <= stopped_at < 400
    proc = cli("resume", slurm_project.name, run_id, "--json")
    assert proc.returncode == 0, proc.stderr
    new_job = json.loads(proc.stdout)["slurm_job"]
    assert new_job != job
    # Stop the resumed job again quickly; the point here is that it resumed from the saved step.
    wait_for_run(cli, slurm_project, run_id, lambda r: r["state"] == "running" and r["step"] > stopped_at,
                 what="the resubmitted job to continue")
    record = slurm.read_record(files)
    assert [j["reason"] for j in record["jobs"]] == ["submit", "resume"]
    assert cli("stop", slurm_project.name, run_id, "--timeout", "240").returncode == 0


def test_a_job_killed_from_slurm_reads_as_failed_with_slurms_reason(cli, slurm_project):
    run_id, job = _submit(cli, slurm_project, "--steps", "400")
    wait_for_run(cli, slurm_project, run_id, lambda r: r["state"] == "running" and r["step"] >= 1,
                 what="training to begin")
    subprocess.run(["scancel", "--signal=KILL", "--full", job], check=True)
    failed = wait_for_run(cli, slurm_project, run_id,
                          lambda r: r["state"] not in ("running", "starting", "stopping"),
                          timeout=120, what="the killed job to end")
    assert failed["state"] == "failed", failed
    assert failed["message"].startswith("Slurm: ") and job in failed["message"]


def _lora(path) -> dict:
    return load_file(str(path))


@pytest.mark.timeout(1800)
def test_a_time_limit_stops_resubmits_and_resumes_to_the_same_weights(cli, slurm_project):
    steps = "150"
    # Slurm checks time limits about every 30 s: with a 1 minute limit and the signal 58 s before it,
    # each job is told to stop within ~2-32 s of starting, so the run needs resubmissions.
    settings.update(slurm_project.settings_file, "slurm", {"signal_seconds": 58})
    # The uninterrupted reference, trained here in the foreground with the same config.
    reference = cli("train", slurm_project.name, "--resolution", "64", "--steps", steps, "--json",
                    "--save-precision", "fp32")
    assert reference.returncode == 0, reference.stderr
    ref_output = json.loads(reference.stdout)["output"]
    run_id, job = _submit(cli, slurm_project, "--steps", steps, "--time-limit", "1", "--max-resubmits", "12",
                          "--save-precision", "fp32")
    done = wait_for_run(cli, slurm_project, run_id, lambda r: r["state"] in ("completed", "failed", "crashed")
                        or (r["state"] == "stopped" and "cap" in (r["message"] or "")), timeout=900,
                        what="the run to complete across time limits")
    assert done["state"] == "completed", done
    files = RunFiles(slurm_project.runs / run_id)
    record = slurm.read_record(files)
    reasons = [j["reason"] for j in record["jobs"]]
    assert reasons[0] == "submit" and reasons.count("time_limit") >= 1 and record["resubmits"] >= 1
    assert done["step"] == int(steps)
    got, want = _lora(done["output"]), _lora(ref_output)
    assert got.keys() == want.keys()
    for key in want:
        assert (got[key] - want[key]).abs().max().item() < 1e-5, key
