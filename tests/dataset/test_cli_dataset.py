"""The dataset CLI end to end, as a user runs it: import, prep, check, captions (--json, --events)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from loradeck.trainer.events import parse_line
from tests.conftest import REPO
from tests.dataset.conftest import BAD, GOOD, noise, sha


def _json(proc) -> dict:
    assert proc.stdout.count("\n") == 1, proc.stdout  # exactly one JSON object
    return json.loads(proc.stdout)


def test_mixed_folder_end_to_end_with_originals_byte_identical(cli, root, mixed):
    folder = mixed["portrait.jpg"].parent
    sources = {name: sha(p) for name, p in mixed.items()}
    cli("init", "cats", "--trigger", "sks cat", root=root, check=True)

    imported = _json(cli("import", "cats", str(folder), "--json", root=root, check=True))
    assert len(imported["imported"]) == len(GOOD) and len(imported["refused"]) == len(BAD)
    assert imported["duplicates"] and imported["captions_imported"]

    prepared = _json(cli("prep", "cats", "--resolution", "64", "--json", root=root, check=True))
    assert prepared["ok"] and len(prepared["prepared"]) == len(GOOD) and prepared["resolution"] == 64
    again = _json(cli("prep", "cats", "--resolution", "64", "--json", root=root, check=True))
    assert again["skipped"] == len(GOOD) and again["prepared"] == []

    proc = cli("check", "cats", "--resolution", "64", "--json", root=root)
    report = _json(proc)
    assert report["images"] == len(GOOD) and sum(report["buckets"].values()) == len(GOOD)
    assert proc.returncode == (0 if report["ok"] else 1)
    assert "uncaptioned" in {p["code"] for p in report["problems"]}

    originals = root / "cats" / "originals"
    assert sorted(sha(p) for p in originals.iterdir()) == sorted(sha(mixed[n]) for n in GOOD)
    assert {name: sha(p) for name, p in mixed.items()} == sources


def test_prep_events_are_json_lines_the_tui_can_follow(cli, root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        noise(80, 60, seed=i).save(src / f"p{i}.png")
    (src / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    cli("init", "ev", root=root, check=True)
    cli("import", "ev", str(src), root=root, check=True)
    (root / "ev" / "originals" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    proc = cli("prep", "ev", "--resolution", "64", "--events", root=root)
    events = [parse_line(line) for line in proc.stdout.splitlines()]
    assert all(events), proc.stdout
    types = [e["type"] for e in events]
    assert types[0] == "task_started" and events[0]["total"] == 4 and types[-1] == "task_finished"
    assert [e["done"] for e in events if e["type"] == "progress"] == [1, 2, 3, 4]
    failed = [e for e in events if e["type"] == "item_failed"]
    assert [e["item"] for e in failed] == ["broken.png"] and failed[0]["reason"]
    assert events[-1]["status"] == "completed" and len(events[-1]["report"]["prepared"]) == 3
    assert proc.returncode == 1 and proc.stderr.strip() == "error: 1 image(s) could not be prepared"


def test_import_events_report_refusals_as_item_failed(cli, root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    noise(32, 32).save(src / "ok.png")
    (src / "bad.jpg").write_bytes(b"")
    cli("init", "imp", root=root, check=True)
    proc = cli("import", "imp", str(src), "--events", root=root, check=True)
    events = [parse_line(line) for line in proc.stdout.splitlines()]
    assert [e["type"] for e in events] == ["task_started", "item_failed", "progress", "progress", "task_finished"]
    assert events[1]["item"] == "bad.jpg" and events[1]["reason"] == "empty file"
    assert events[-1]["report"]["imported"] == ["ok.png"]


def test_captions_commands_with_json(cli, root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    noise(64, 64, seed=1).save(src / "a.png")
    noise(64, 64, seed=2).save(src / "b.png")
    (src / "a.txt").write_text("cat, sitting")
    cli("init", "cap", "--trigger", "sks cat", root=root, check=True)
    cli("import", "cap", str(src), root=root, check=True)
    cli("prep", "cap", "--resolution", "64", root=root, check=True)

    listed = _json(cli("captions", "list", "cap", "--json", root=root, check=True))
    assert listed["counts"] == {"captioned": 1, "missing": 1}
    preview = _json(cli("captions", "trigger", "cap", "--dry-run", "--json", root=root, check=True))
    assert preview["changes"][0]["after"] == "sks cat, cat, sitting" and not preview["applied"]
    assert (root / "cap" / "dataset" / "a.txt").read_text() == "cat, sitting\n"
    cli("captions", "trigger", "cap", "--json", root=root, check=True)
    second = _json(cli("captions", "trigger", "cap", "--json", root=root, check=True))
    assert second["changes"] == [] and second["unchanged"] == 1
    replaced = _json(cli("captions", "replace", "cap", r"sit(\w+)", r"stand\1", "--regex", "--json",
                         root=root, check=True))
    assert replaced["changes"][0]["after"] == "sks cat, cat, standting"
    tags = _json(cli("captions", "tags", "cap", "--json", root=root, check=True))
    assert {"tag": "sks cat", "count": 1} in tags["tags"]
    cli("captions", "set", "cap", "b.png", "a dog", root=root, check=True)
    exported = _json(cli("captions", "export", "cap", "--to", str(tmp_path / "meta.jsonl"), "--json",
                         root=root, check=True))
    assert exported["rows"] == 2 and exported["missing"] == 0
    back = _json(cli("captions", "import", "cap", str(tmp_path / "meta.jsonl"), "--json", root=root, check=True))
    assert back["unchanged"] == 2 and back["changes"] == []
    bad = cli("captions", "replace", "cap", "(", "x", "--regex", root=root)
    assert bad.returncode == 1 and bad.stderr.startswith("error: invalid regular expression")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_unknown_project_fails_with_one_line(cli, root):
    for args in (["import", "nope", "x"], ["prep", "nope"], ["check", "nope"], ["captions", "list", "nope"]):
        proc = cli(*args, root=root)
        assert proc.returncode == 1 and proc.stderr.startswith("error: no project 'nope'")
        assert len(proc.stderr.strip().splitlines()) == 1


def test_sigterm_stops_prep_cleanly_and_keeps_finished_images(cli, root, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(60):
        noise(512, 512, seed=i).save(src / f"n{i:02d}.png", compress_level=0)
    cli("init", "stop", root=root, check=True)
    cli("import", "stop", str(src), root=root, check=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "loradeck.tui", "prep", "stop", "--resolution", "64", "--workers", "1",
                             "--events", "--root", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    for line in proc.stdout:
        if parse_line(line)["type"] == "progress":
            proc.send_signal(signal.SIGSTOP)  # freeze it so the stop lands mid-run
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGCONT)
            break
    rest, err = proc.communicate(timeout=60)
    events = [parse_line(line) for line in rest.splitlines()]
    assert proc.returncode == 130, err
    assert events[-1]["type"] == "task_finished" and events[-1]["status"] == "stopped"
    done = len(events[-1]["report"]["prepared"])
    assert 1 <= done < 60
    kept = [p for p in (root / "stop" / "dataset").iterdir() if p.suffix == ".png"]
    assert len(kept) == done
    assert not [p for p in (root / "stop" / "dataset").iterdir() if p.name.startswith(".")]
    follow_up = json.loads(cli("prep", "stop", "--resolution", "64", "--json", root=root, check=True).stdout)
    assert follow_up["skipped"] == done and len(follow_up["prepared"]) == 60 - done


def test_a_failing_task_ends_its_event_stream_with_failed(cli, root):
    cli("init", "bad", root=root, check=True)
    proc = cli("prep", "bad", "--resolution", "60", "--events", root=root)
    events = [parse_line(line) for line in proc.stdout.splitlines()]
    assert events[-1]["type"] == "task_finished" and events[-1]["status"] == "failed"
    assert "multiple of 8" in events[-1]["message"]
    assert proc.returncode == 1 and proc.stderr.startswith("error: resolution must be a multiple of 8")
