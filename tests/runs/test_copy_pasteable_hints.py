"""Every command a message suggests can be pasted into a shell as is: names with spaces are quoted
(item 12.10). The project here is called `qa cats`."""

from __future__ import annotations

import re
import shlex

from loradeck.trainer.cli import main as cli_main
from loradeck.trainer.cli_hint import command
from loradeck.trainer.dataset.project import create_project
from loradeck.trainer.runs import lifecycle as runs
from tests.conftest import REPO
from tests.fake_trainer import use_fake_trainer
from tests.runs.conftest import write_images
from tests.waiting import wait_until


def suggested(text: str) -> list[list[str]]:
    """The `loradeck ...` commands in `text`, split as a shell would (up to a closing bracket,
    backquote, semicolon, comma or line end)."""
    found = []
    for m in re.finditer(r"loradeck (?:'[^']*'|[^)`;,\n'])+", text):
        found.append(shlex.split(m.group(0).strip()))
    return found


def test_command_quotes_only_what_needs_it():
    assert command("prep", "qa cats", "--resolution", 64) == "loradeck prep 'qa cats' --resolution 64"
    assert command("train", "toy") == "loradeck train toy"
    assert shlex.split(command("stop", "it's", "r1"))[2] == "it's"


def test_hints_for_a_project_with_a_space_in_its_name_are_copy_pasteable(root, cli):
    project = create_project("qa cats", root, base_model="synthetic:tiny")
    texts = [cli("check", "qa cats", root=root).stdout + cli("check", "qa cats", root=root).stderr,
             cli("runs", "qa cats", root=root).stdout,
             cli("captions", "trigger", "qa cats", root=root).stderr,
             cli("check", "qa dogs", root=root).stderr,
             cli("train", "qa cats", "--steps", "2", root=root).stderr]
    write_images(project.originals, 2, size=128)
    texts.append(cli("check", "qa cats", root=root).stdout)
    commands = [c for t in texts for c in suggested(t)]
    expected = {("import", "qa cats", "FOLDER"), ("train", "qa cats"), ("captions", "trigger", "qa cats", "WORD"),
                ("init", "qa dogs"), ("check", "qa cats"), ("prep", "qa cats")}
    seen = {tuple(c[1:]) for c in commands}
    assert expected <= seen, (seen, texts)
    for c in commands:  # never the name split in two
        assert "qa" not in c and "cats" not in c, c


def test_detached_train_prints_complete_watch_and_stop_commands(root, monkeypatch, capsys):
    use_fake_trainer(monkeypatch, step_seconds=0.01)
    project = create_project("qa cats", root, base_model="synthetic:tiny")
    write_images(project.dataset)
    assert cli_main(["train", "qa cats", "--steps", "3", "--resolution", "64", "--detach"]) == 0
    out = capsys.readouterr().out
    files = runs.latest_run(project)
    wait_until(lambda: runs.run_state(files) == "completed")
    assert ["loradeck", "monitor", "qa cats", files.run_id] in suggested(out)
    assert ["loradeck", "stop", "qa cats", files.run_id] in suggested(out)


def test_no_message_in_the_code_builds_a_loradeck_command_around_a_name_by_hand():
    # An f-string such as f"loradeck prep {name}" skips the quoting; loradeck.trainer.cli_hint.command does it.
    pattern = re.compile(r"loradeck [a-z][a-z -]*\{")
    offenders = []
    for folder in ("trainer", "tui"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if pattern.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == []
