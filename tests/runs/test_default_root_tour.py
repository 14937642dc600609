"""The README's shell tour as a new user runs it: no --root, no $LORADECK_ROOT, so the projects
live in ./projects of a fresh working folder (relative paths everywhere: the import folder, --to).

Runs the real trainer on synthetic:tiny for a couple of steps; a run folder must never be named
relative to a process that starts somewhere else (the trainer starts in its run folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from loradeck.trainer.dataset.project import ROOT_ENV
from tests.conftest import REPO

pytestmark = pytest.mark.slow

TINY = ["--base-model", "synthetic:tiny", "--resolution", "64", "--mixed-precision", "no", "--steps", "2"]


def loradeck(cwd: Path, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`loradeck ARGS` run from `cwd` as a user types it: the projects root left to its default."""
    full = {k: v for k, v in os.environ.items() if k != ROOT_ENV}
    full["PYTHONPATH"] = str(REPO) + os.pathsep + full.get("PYTHONPATH", "")
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "loradeck.tui", *args], cwd=cwd, capture_output=True, text=True,
                          env=full, timeout=timeout, stdin=subprocess.DEVNULL)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    return proc


def photos(folder: Path, n: int = 3) -> None:
    """A few small photos with sidecar captions, as a user's folder would hold them."""
    folder.mkdir(parents=True)
    for i in range(n):
        image = Image.new("RGB", (96, 80), ((70 * i) % 256, 120, (200 - 60 * i) % 256))
        for x in range(20, 50):
            image.putpixel((x, 30 + i * 5), (255, 255, 255))
        image.save(folder / f"cat_{i}.png")
        (folder / f"cat_{i}.txt").write_text(f"a cat, pose {i}")


def shell_tour(cwd: Path, env: dict | None = None) -> dict:
    """init, import, prep, check, a foreground train, a detached train, monitor until done, export;
    returns what the last commands said."""
    photos(cwd / "photos")
    ok(loradeck(cwd, "init", "cats", "--trigger", "sks cat", "--base-model", "synthetic:tiny", env=env))
    ok(loradeck(cwd, "import", "cats", "photos", env=env))
    ok(loradeck(cwd, "prep", "cats", "--resolution", "64", env=env))
    ok(loradeck(cwd, "check", "cats", env=env))

    fg = json.loads(ok(loradeck(cwd, "train", "cats", *TINY, "--json", env=env)).stdout)
    assert fg["state"] == "completed", fg
    detached = json.loads(ok(loradeck(cwd, "train", "cats", *TINY, "--detach", "--json", env=env)).stdout)
    # `loradeck monitor cats` re-attaches to the running one; with no terminal it follows it as text.
    monitored = loradeck(cwd, "monitor", "cats", env=env)
    ok(monitored)
    assert f"run {detached['run_id']}: the only active run of cats" in monitored.stderr \
        or f"run {detached['run_id']}: the newest run of cats" in monitored.stderr
    assert f"run {detached['run_id']} completed at step 2/2" in monitored.stdout

    listed = json.loads(ok(loradeck(cwd, "runs", "cats", "--json", env=env)).stdout)
    assert [r["state"] for r in listed["runs"]] == ["completed", "completed"]

    (cwd / "loras").mkdir()
    exported = json.loads(ok(loradeck(cwd, "export", "cats", "--to", "loras", "--json", env=env)).stdout)
    validated = json.loads(loradeck(cwd, "validate", exported["adapter"], "--no-load-check", "--json",
                                    env=env).stdout)
    return {"foreground": fg, "detached": detached, "runs": listed, "export": exported, "validate": validated}


def test_readme_shell_tour_with_the_default_projects_root(tmp_path):
    """The tour from a fresh working folder: both runs complete, their folders sit under
    ./projects, and the export lands in ./loras and validates (rules and the diffusers load)."""
    cwd = tmp_path / "fresh"
    cwd.mkdir()
    out = shell_tour(cwd)
    root = cwd.resolve() / "projects"
    for run in out["runs"]["runs"]:
        assert Path(run["dir"]).parent == root / "cats" / "runs"
        assert Path(run["output"]).is_file()
    export = out["export"]
    assert Path(export["adapter"]).parent == cwd.resolve() / "loras"
    assert export["run"] == out["detached"]["run_id"]  # the newest run with a final LoRA
    assert export["load_check"].startswith("passed"), export
    assert out["validate"]["ok"] is True
    # launch.json records the trainer command line: an absolute run folder, whatever the cwd
    launch = json.loads((root / "cats" / "runs" / export["run"] / "launch.json").read_text())
    assert Path(launch["command"][launch["command"].index("loradeck.trainer.train.process") + 1]).is_absolute()


def test_tour_from_a_folder_with_spaces_and_non_ascii_characters(tmp_path):
    cwd = tmp_path / "my lora wörk — ñame"
    cwd.mkdir()
    out = shell_tour(cwd)
    assert out["export"]["load_check"].startswith("passed")
    assert Path(out["export"]["adapter"]).is_file()


def test_root_given_with_a_tilde_resolves_against_home(tmp_path):
    """`--root ~/loras` (as a shell would not expand inside quotes) and $LORADECK_ROOT=~/...: HOME's
    folder, from any working folder; a training run there completes."""
    home, cwd = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir(), cwd.mkdir()
    env = {"HOME": str(home)}
    ok(loradeck(cwd, "init", "cats", "--base-model", "synthetic:tiny", "--root", "~/loras", env=env))
    assert (home / "loras" / "cats" / "project.toml").is_file()
    photos(cwd / "photos")
    env_root = {**env, ROOT_ENV: "~/loras"}
    ok(loradeck(cwd, "import", "cats", "photos", env=env_root))
    ok(loradeck(cwd, "prep", "cats", "--resolution", "64", env=env_root))
    fg = json.loads(ok(loradeck(cwd, "train", "cats", *TINY, "--json", env=env_root)).stdout)
    assert fg["state"] == "completed"
    assert Path(fg["dir"]).parent == (home / "loras" / "cats" / "runs").resolve()


def test_root_reached_through_a_symlink(tmp_path):
    """A projects root that is a symlink (./projects -> a disk elsewhere): runs complete and are
    found, stopped and listed by one path."""
    real, cwd = tmp_path / "big disk" / "projects", tmp_path / "work"
    real.mkdir(parents=True), cwd.mkdir()
    (cwd / "projects").symlink_to(real, target_is_directory=True)
    photos(cwd / "photos")
    ok(loradeck(cwd, "init", "cats", "--base-model", "synthetic:tiny"))
    assert (real / "cats" / "project.toml").is_file()
    ok(loradeck(cwd, "import", "cats", "photos"))
    ok(loradeck(cwd, "prep", "cats", "--resolution", "64"))
    fg = json.loads(ok(loradeck(cwd, "train", "cats", *TINY, "--json")).stdout)
    assert fg["state"] == "completed"
    assert Path(fg["dir"]).parent == real.resolve() / "cats" / "runs"
