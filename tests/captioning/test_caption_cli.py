"""`loradeck caption` as a user (or the TUI) runs it: a real subprocess each time."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from loradeck.trainer.dataset import caption_store
from loradeck.trainer.dataset.project import dataset_images
from loradeck.trainer.events import parse_line

from .helpers import TINY

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Runs the real CLI, with generation slowed down so a signal reliably lands mid-run.
SLOW_CLI = """
import sys, time
import loradeck.trainer.captions.blip_captioning as engine
real = engine._generate
def slow(*args, **kwargs):
    time.sleep(0.3)
    return real(*args, **kwargs)
engine._generate = slow
from loradeck.trainer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_sigterm_stops_after_the_batch_and_a_rerun_finishes_without_rewriting(make_project, root):
    project = make_project(20)  # 18 batches of 0.3 s left when the signal goes: ample margin
    args = ["caption", project.name, "--root", str(root), "--model", TINY, "--batch-size", "1",
            "--max-length", "8", "--events"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    events = []
    deadline = time.monotonic() + 120
    for line in proc.stdout:  # wait until two batches are done, then ask it to stop
        events.append(parse_line(line))
        if events[-1]["type"] == "progress" and events[-1]["done"] >= 2:
            proc.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "no progress from the caption process"
    rest, err = proc.communicate(timeout=120)
    events += [parse_line(line) for line in rest.splitlines()]
    assert proc.returncode == 128 + signal.SIGTERM, err
    finished = events[-1]
    assert finished["type"] == "task_finished" and finished["status"] == "stopped"
    first = {p.name: (caption_store.caption_path(p).read_bytes(), caption_store.caption_path(p).stat().st_mtime_ns)
             for p in dataset_images(project) if caption_store.has_caption(p)}
    assert 2 <= len(first) == finished["captioned"] < 20  # every finished batch saved, not all done
    assert not list(project.dataset.glob(".loradeck-tmp-*"))  # no half-written caption left behind

    rerun_args = [a if a != "1" else "4" for a in args[:-1]]  # --batch-size 4: same outcome, sooner
    rerun = subprocess.run([sys.executable, "-m", "loradeck.trainer", *rerun_args, "--json"], capture_output=True,
                           text=True, env=_env(), cwd=REPO, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == len(first) and summary["captioned"] == 20 - len(first)
    assert all(caption_store.has_caption(p) for p in dataset_images(project))
    for name, (data, mtime) in first.items():  # captions from the first run were not written again
        path = caption_store.caption_path(project.dataset / name)
        assert path.read_bytes() == data and path.stat().st_mtime_ns == mtime


def test_events_are_json_lines_the_tui_can_parse(make_project, root, cli):
    project = make_project(5)
    (project.dataset / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    proc = cli("caption", project.name, "--model", TINY, "--batch-size", "2", "--max-length", "8",
               "--events", "--json", root=root)
    assert proc.returncode == 0, proc.stderr
    *lines, last = proc.stdout.splitlines()
    assert parse_line(last) is None and json.loads(last)["captioned"] == 5  # --json summary, not an event
    events = [parse_line(line) for line in lines]
    assert all(e is not None for e in events)  # nothing but events on stdout
    types = [e["type"] for e in events]
    assert types[0] == "task_started" and types[-1] == "task_finished"
    assert events[0]["total"] == 6
    assert [e["item"] for e in events if e["type"] == "item_failed"] == ["broken.png"]
    done = [e["done"] for e in events if e["type"] == "progress" and "item" in e]
    assert done == sorted(done) and done[-1] == 6
    assert events[-1]["status"] == "completed" and events[-1]["captioned"] == 5


def test_caption_command_end_to_end_with_progress_bar_and_json(make_project, root, cli):
    project = make_project(3, trigger_word="ohwx")
    proc = cli("caption", project.name, "--model", TINY, "--max-length", "8", "--json", root=root)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # exactly one JSON object on stdout
    assert summary["ok"] and summary["captioned"] == 3 and summary["failed"] == [] and not summary["stopped"]
    assert "3/3" in proc.stderr  # the Rich bar went to stderr
    assert all(caption_store.read_caption(p).startswith("ohwx, ") for p in dataset_images(project))


def test_missing_model_is_one_clear_line_naming_it_and_how_to_download(make_project, root, cli):
    project = make_project(2)
    proc = cli("caption", project.name, "--model", "nobody-here/no-such-blip-model", root=root,
               env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "nobody-here/no-such-blip-model" in lines[0] and "hf download" in lines[0]
    assert not any(caption_store.has_caption(p) for p in dataset_images(project))


def test_sampling_knobs_without_sample_are_refused(make_project, root, cli):
    project = make_project(1)
    proc = cli("caption", project.name, "--model", TINY, "--top-p", "0.5", root=root)
    assert proc.returncode == 1 and "--sample" in proc.stderr


def test_importing_the_caption_cli_does_not_import_torch():
    code = ("import sys, loradeck.trainer.cli.cmd_caption, loradeck.trainer.captions.blip_captioning, loradeck.trainer.captions.blip_model; "
            "heavy = [m for m in ('torch', 'transformers', 'PIL.Image') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
