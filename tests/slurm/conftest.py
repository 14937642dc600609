"""Fixtures for the Slurm tests: one real local cluster per test session, a tiny project set up for it."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.dataset.project import create_project
from loradeck.trainer.runs import lifecycle as runs
from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.slurm import batch as slurm
from tests.runs.conftest import project, write_images  # noqa: F401  (project: a fixture)
from tests.slurm.local_cluster import LocalCluster, why_unavailable
from tests.waiting import wait_until


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A running single-node Slurm cluster (SLURM_CONF set for this process and its children)."""
    reason = why_unavailable()
    if reason:
        pytest.skip(reason)
    cluster = LocalCluster(tmp_path_factory.mktemp("slurm")).start()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    yield cluster
    cluster.stop()
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous


@pytest.fixture
def slurm_project(root, slurm_cluster):
    """A synthetic:tiny project with three 64 px images whose [slurm] asks for one CPU and no GPU."""
    proj = create_project("toy", root, trigger_word="sks", base_model="synthetic:tiny")
    write_images(proj.dataset)
    settings.update(proj.settings_file, "slurm", {"gpus": 0, "cpus": 1, "signal_seconds": 50})
    yield proj
    subprocess.run(["scancel", "--full", "--user=root"], capture_output=True)


def runs_json(cli, project) -> list[dict]:
    proc = cli("runs", project.name, "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["runs"]


def wait_for_run(cli, project, run_id: str, predicate, timeout: float = 300.0, what: str = "") -> dict:
    """Poll `loradeck runs --json` (as a user on a login node would) until `predicate(run)` holds; return the run."""
    last: dict = {}

    def matching_run():
        for run in runs_json(cli, project):
            if run["run_id"] == run_id:
                last["run"] = run
                return run if predicate(run) else None
        return None

    def last_seen() -> str:
        log = Path(project.runs / run_id / "train.log")
        tail = log.read_text()[-3000:] if log.exists() else "(no train.log)"
        return f"last seen: {last.get('run')}\n{tail}"

    return wait_until(matching_run, timeout, interval=1.0, message=what or "the run", describe=last_seen)


def _tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def scripted_slurm(tmp_path, monkeypatch):
    """Fake squeue / scontrol / sacct / sbatch / scancel on PATH; `reply(squeue=..., scontrol=...)` scripts them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "slurm-calls.log"
    counter = tmp_path / "next-job"
    counter.write_text("500")

    def reply(squeue: str = "", scontrol: str = "", sacct: str | None = None) -> None:
        _tool(bin_dir, "squeue", f"echo squeue \"$@\" >> {log}; printf '%s' '{squeue}'")
        _tool(bin_dir, "scontrol", f"echo scontrol \"$@\" >> {log}; "
              + (f"printf '%s' '{scontrol}'" if scontrol else "echo 'slurm_load_jobs error: Invalid job id' >&2; exit 1"))
        if sacct is None:
            (bin_dir / "sacct").unlink(missing_ok=True)
        else:
            _tool(bin_dir, "sacct", f"printf '%s' '{sacct}'")
        slurm._cache.clear()

    _tool(bin_dir, "sbatch", f"n=$(cat {counter}); echo $((n+1)) > {counter}; echo sbatch \"$@\" >> {log}; echo $n")
    _tool(bin_dir, "scancel", f"echo scancel \"$@\" >> {log}")
    reply()
    reply.log = log
    return reply


def slurm_run(project, job_id="1234", submitted=None) -> RunFiles:
    files = runs.create_run(project, {"max_train_steps": 4})
    record = {"jobs": [{"id": job_id, "submitted": submitted or time.time(), "reason": "submit"}], "resubmits": 0,
              "max_resubmits": 3}
    slurm.record_path(files).write_text(json.dumps(record))
    return files




@pytest.fixture
def trainable_slurm(project):
    """The toy project whose [slurm] asks for a CPU-only job (the scripted sbatch accepts anything)."""
    settings.update(project.settings_file, "slurm", {"gpus": 0, "cpus": 1})
    return project
