"""Shared fixtures. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The product imports as loradeck.* (pyproject's package-dir); the bare folder names are never packages
# here, though pytest's pythonpath "." (for tests.*) would let `trainer.x` import a second copy of a module
# (a monkeypatch of "trainer.x.f" would then patch nothing the code runs).
sys.modules.setdefault("trainer", None)
sys.modules.setdefault("tui", None)

# Tests never reach a model hub; code must cope with offline mode.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Every estimate is traced (tests patch the estimator); tests/trainer_engine/test_estimate_cache.py turns
# the cache on where it is what is tested.
os.environ.setdefault("LORADECK_NO_ESTIMATE_CACHE", "1")


# The longest test files, collected first (longest first) so xdist's --dist loadfile hands them out while
# there is still other work to balance them: the real Slurm file (minutes, mostly waiting on its one-minute
# time limit) starts one worker. Per-file seconds from a clean-clone CI's --durations (2 cores, 2 workers).
LONG_FIRST = ("tests/slurm/test_slurm_cluster.py",  # 310 s
              "tests/runs/test_default_root_tour.py",  # 175 s
              "tests/trainer_engine/test_train_process.py",  # 129 s
              "tests/runs/test_run_queue.py",  # 104 s
              "tests/runs/test_step_count.py",  # 64 s
              "tests/runs/test_multi_gpu_launch.py")  # 58 s


def pytest_collection_modifyitems(config, items):
    rank = {path: i for i, path in enumerate(LONG_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONG_FIRST)))  # stable: the rest keep order


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """An empty projects root, also set as $LORADECK_ROOT."""
    r = tmp_path / "projects"
    r.mkdir()
    monkeypatch.setenv("LORADECK_ROOT", str(r))
    return r


def run_cli(*args: str, root: Path | None = None, env: dict | None = None, timeout: float = 600,
            check: bool = False) -> subprocess.CompletedProcess:
    """Run `loradeck ARGS` as a user would, in a fresh process (the code under test in this tree)."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    if env:
        full_env.update(env)
    cmd = [sys.executable, "-m", "loradeck.tui", *args]
    if root is not None:
        cmd += ["--root", str(root)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"loradeck {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli
