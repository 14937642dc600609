"""Fixtures for the Slurm tests: one real local cluster per test session, a tiny project set up for it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.runs.conftest import project, write_images  # noqa: F401  (project: a fixture)
from tests.slurm.local_cluster import LocalCluster, why_unavailable
from trainer import settings
from trainer.project import create_project


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


def wait_for(cli, project, run_id: str, predicate, timeout: float = 300.0, what: str = "") -> dict:
    """Poll `loradeck runs --json` (as a user on a login node would) until `predicate(run)` holds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        for run in runs_json(cli, project):
            if run["run_id"] == run_id:
                last = run
                if predicate(run):
                    return run
        time.sleep(1.0)
    log = Path(project.runs / run_id / "train.log")
    tail = log.read_text()[-3000:] if log.exists() else "(no train.log)"
    raise AssertionError(f"timed out waiting for {what or 'the run'}; last seen: {last}\n{tail}")
