"""A trainer whose project is deleted under it stops with an error and recreates nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess

import pytest
from engine_helpers import PYTHON, REPO, write_images, write_run

from loradeck.trainer.runs.files import RunFiles
from loradeck.trainer.train.run_guard import RunFolderGone, check_run_folder


def test_a_deleted_project_under_a_running_trainer_is_never_recreated_and_the_trainer_fails(tmp_path, tiny_model):
    project = tmp_path / "qa cats"
    write_images(project / "dataset", 4)
    (project / "project.toml").write_text('[project]\nname = "qa cats"\n')
    # Latents cached in memory: after the start nothing reads the dataset, only the guard notices.
    run = write_run(project / "runs" / "r1", project, base_model=str(tiny_model), max_train_steps=5000,
                    cache_latents=True, cache_latents_to_disk=False, batch_size=1)
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([PYTHON, "-m", "loradeck.trainer.train.process", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True, text=True)
    try:
        for line in proc.stdout:  # the trainer echoes its events to stdout (train.log)
            if line.startswith("step "):
                break
        # What the old delete did: the folder disappears at once, then the trainer is told to stop.
        project.rename(tmp_path / ".qa cats.deleting")
        shutil.rmtree(tmp_path / ".qa cats.deleting")
        try:
            os.kill(proc.pid, signal.SIGTERM)  # a stop saves state: the save must not mkdir the run back
        except ProcessLookupError:
            pass
        rest = proc.stdout.read()
        code = proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not project.exists(), sorted(str(p) for p in project.rglob("*"))
    assert code == 1
    assert "kind=io" in rest and "is gone" in rest


def test_the_guard_refuses_a_missing_run_folder_and_a_project_without_its_toml(tmp_path):
    project = tmp_path / "p"
    run = project / "runs" / "r1"
    run.mkdir(parents=True)
    (project / "project.toml").write_text("")
    check_run_folder(RunFiles(run), project)  # all there: no error
    (project / "project.toml").unlink()
    with pytest.raises(RunFolderGone, match="no project.toml"):
        check_run_folder(RunFiles(run), project)
    check_run_folder(RunFiles(run), tmp_path / "elsewhere")  # a run outside its project's runs/ folder
    shutil.rmtree(project)
    with pytest.raises(RunFolderGone, match="is gone"):
        check_run_folder(RunFiles(run), None)
    assert not run.exists()
