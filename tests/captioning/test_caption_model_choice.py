"""Which captioning model a project uses (project.toml [caption] model, `--model` over it), how fast a
model that is not on this machine is refused, and a stop while a model loads."""

from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from loradeck.trainer.captions.blip_captioning import CaptionOptions, caption_project, project_caption_model
from loradeck.trainer.captions.blip_model import DEFAULT_MODEL, synthetic_model_path
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.events import parse_line
from tests.waiting import wait_until

from .helpers import TINY

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env(tmp_path, **extra) -> dict:
    """A subprocess environment with an empty Hugging Face cache and no offline switch or proxy."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                        "all_proxy", "HF_HOME", "HF_ENDPOINT")}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["HF_HUB_CACHE"] = str(tmp_path / "hf-cache")
    env.update(extra)
    return env


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once this socket is closed


def test_the_project_setting_names_the_model_and_the_flag_overrides_it(make_project, model_cache):
    project = make_project(2, name="toml-model")  # on the default (non-synthetic) base model
    s = settings_mod.load(project.settings_file)
    assert project_caption_model(s) == DEFAULT_MODEL
    folder = str(synthetic_model_path("blip-tiny"))  # a local BLIP folder, as a user would have
    s = settings_mod.update(project.settings_file, "caption", {"model": folder})
    assert project_caption_model(s) == folder
    assert project_caption_model(s, "some/other") == "some/other"  # `loradeck caption --model` wins
    report = caption_project(project, CaptionOptions(device="cpu", max_length=6))
    assert report.model == folder and len(report.captioned) == 2


def test_new_projects_carry_the_caption_table_and_synthetic_ones_default_to_the_tiny_blip(make_project):
    project = make_project(0, name="synth", base_model="synthetic:tiny")
    assert "[caption]" in project.settings_file.read_text()
    assert project_caption_model(settings_mod.load(project.settings_file)) == TINY


FAIL_FAST = """
import sys
from loradeck.trainer.captions.blip_model import load_captioner
from loradeck.trainer.errors import ModelError
try:
    load_captioner("nobody-here/no-such-blip", device="cpu")
except ModelError as e:
    print(e.one_line())
print("torch loaded" if "torch" in sys.modules or "transformers" in sys.modules else "nothing heavy loaded")
"""


@pytest.mark.parametrize("case", ["offline", "unreachable"])
def test_an_uncached_hub_model_is_refused_at_once_without_retries(tmp_path, case):
    extra = {"HF_HUB_OFFLINE": "1"} if case == "offline" else {"HF_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    proc = subprocess.run([sys.executable, "-c", FAIL_FAST], capture_output=True, text=True, timeout=120,
                          env=_env(tmp_path, **extra), cwd=REPO)
    line, verdict = proc.stdout.strip().splitlines()
    # Refused before huggingface_hub's retrying downloader (or even torch) is ever reached.
    assert verdict == "nothing heavy loaded", proc.stderr
    assert "nobody-here/no-such-blip" in line and "not in the Hugging Face cache" in line
    assert ("HF_HUB_OFFLINE is set" if case == "offline" else "the hub cannot be reached") in line
    assert "hf download nobody-here/no-such-blip" in line and "local folder" in line


def _fake_hub_cache(cache, repo_id: str) -> None:
    """`repo_id` in the Hugging Face cache layout, holding the tiny BLIP's files."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(synthetic_model_path("blip-tiny"), snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)


def test_a_cached_hub_model_loads_with_no_network_at_all(tmp_path, model_cache):
    _fake_hub_cache(tmp_path / "hf-cache", "someone/tiny-blip")
    code = ("from loradeck.trainer.captions.blip_model import load_captioner\n"
            "c = load_captioner('someone/tiny-blip', device='cpu')\n"
            "print(c.name, type(c.model).__name__)\n")
    # The hub is unreachable and not marked offline: a network check would fail (or retry).
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["someone/tiny-blip", "BlipForConditionalGeneration"]


def test_sigterm_while_the_model_loads_stops_at_once_as_stopped(make_project, root, tmp_path):
    project = make_project(2, name="slow-hub")
    # A hub that accepts connections and never answers: the download would hang and retry for long.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        env = _env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{silent.getsockname()[1]}")
        proc = subprocess.Popen([sys.executable, "-m", "loradeck.trainer", "caption", project.name, "--root", str(root),
                                 "--model", "someone/slow-blip", "--device", "cpu", "--events"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        events = []
        for line in proc.stdout:
            events.append(parse_line(line))
            if "loading" in str(events[-1].get("message", "")):
                break
        # Into the load: the process is waiting on the silent hub (a connection is pending on it).
        wait_until(lambda: select.select([silent], [], [], 0)[0], 60, message="a request to the silent hub")
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        rest, err = proc.communicate(timeout=60)
        took = time.monotonic() - signalled
    finally:
        silent.close()
    events += [parse_line(line) for line in rest.splitlines()]
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert events[-1]["type"] == "task_finished" and events[-1]["status"] == "stopped"
    # huggingface_hub alone would wait 10 s per request and retry for ~23 s more; the stop does not wait.
    assert took < 8, f"took {took:.1f} s to stop"


def test_a_stop_that_lands_inside_a_library_import_still_reads_stopped(make_project, monkeypatch):
    # transformers' lazy imports catch whatever interrupts them (here the stop raised by the SIGTERM
    # handler) and raise their own "Failed to import ..." error from it: that is still the user's stop.
    from loradeck.trainer.captions import blip_captioning as captioning
    from loradeck.trainer.errors import StopRequested

    def load_interrupted(*_args):
        try:
            raise StopRequested()
        except StopRequested as stop:
            raise RuntimeError("Failed to import transformers.models.blip because of the error above") from stop

    monkeypatch.setattr(captioning, "_load", load_interrupted)
    events = []
    report = caption_project(make_project(2, name="stop-in-import"), CaptionOptions(device="cpu"),
                             on_event=lambda kind, **fields: events.append((kind, fields)))
    assert report.stopped and report.status == "stopped"
    assert events[-1][0] == "task_finished" and events[-1][1]["status"] == "stopped"


def test_the_stop_window_opens_only_after_torch_is_imported(make_project, tmp_path):
    # A Python exception raised by the stop inside torch's C++ import aborts the whole process (SIGABRT,
    # seen in CI): so torch is imported before the window in which a stop raises at once.
    project = make_project(1, name="window")
    code = ("import contextlib, sys\n"
            "from loradeck.trainer.captions.blip_captioning import CaptionOptions, caption_project\n"
            "from loradeck.trainer.dataset.project import open_project\n"
            "seen = []\n"
            "@contextlib.contextmanager\n"
            "def window():\n"
            "    seen.append('torch' in sys.modules)\n"
            "    yield\n"
            f"caption_project(open_project({project.name!r}, {str(project.root)!r}), CaptionOptions(model={TINY!r}, device='cpu'),"
            " interruptible=window)\n"
            "print(seen)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[-1] == "[True]"
