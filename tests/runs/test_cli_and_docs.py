"""The train/runs/stop/resume command line, and the docs that describe flags, keys and events."""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import fields
from pathlib import Path

import pytest

from loradeck.trainer import events
from loradeck.trainer.cli import build_parser
from loradeck.trainer.cli.cmd_train import flag_for, overrides_from
from loradeck.trainer.config import kohya as kohya_config
from loradeck.trainer.config.train_config import TrainConfig

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOCUMENTED_FLAGS = (
    "--base-model --config --steps --epochs --batch-size --lr --rank --alpha --resolution --seed "
    "--mixed-precision --attention --gradient-checkpointing --cache-latents --cache-text-embeddings "
    "--optimizer --train-text-encoder --targets --repeats --grad-accum --lr-scheduler --warmup-steps "
    "--noise-offset --min-snr-gamma --shuffle-caption --keep-tokens --caption-dropout --sample-prompt "
    "--sample-every-steps --sample-every-epochs --save-every-steps --save-every-epochs --save-last-n "
    "--save-precision --output-name --gpus --detach").split()


def parse(*argv):
    return build_parser().parse_args(["train", "toy", *argv])


def test_every_documented_flag_exists():
    option_strings = set()
    for action in build_parser()._subparsers._group_actions[0].choices["train"]._actions:
        option_strings.update(action.option_strings)
    assert sorted(set(DOCUMENTED_FLAGS) - option_strings) == []


def test_every_config_field_has_one_flag_and_only_given_flags_override():
    assert len({flag_for(f.name) for f in fields(TrainConfig)}) == len(fields(TrainConfig))
    assert overrides_from(parse()) == {}
    args = parse("--steps", "4", "--lr", "3e-4", "--rank", "8", "--alpha", "4", "--mixed-precision", "bf16",
                 "--gradient-checkpointing", "--no-cache-latents", "--targets", "kohya", "--grad-accum", "2",
                 "--caption-dropout", "0.1", "--sample-prompt", "a sks toy", "--sample-prompt", "sks, beach",
                 "--warmup-steps", "5", "--gpus", "2")
    assert overrides_from(args) == {
        "max_train_steps": 4, "learning_rate": 3e-4, "rank": 8, "alpha": 4.0, "mixed_precision": "bf16",
        "gradient_checkpointing": True, "cache_latents": False, "target_modules": "kohya",
        "gradient_accumulation_steps": 2, "caption_dropout_rate": 0.1,
        "sample_prompts": ["a sks toy", "sks, beach"], "lr_warmup_steps": 5, "gpus": 2}


@pytest.mark.parametrize("argv", [["--steps", "4", "--epochs", "2"], ["--attention", "flash"],
                                  ["--rank", "four"], ["--optimizer", "lion"]])
def test_bad_flags_are_refused_by_argparse(argv, capsys):
    with pytest.raises(SystemExit) as e:
        parse(*argv)
    assert e.value.code == 2


def test_train_on_an_empty_project_fails_with_one_line(cli, root):
    cli("init", "empty", "--base-model", "synthetic:tiny", root=root, check=True)
    proc = cli("train", "empty", "--steps", "2", root=root)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: cannot train 'empty'")
    assert "dataset has no images" in proc.stderr
    assert list((root / "empty" / "runs").iterdir()) == []


def test_runs_stop_resume_from_the_command_line(project, cli, root):
    from loradeck.trainer.runs import lifecycle as runs

    files = runs.create_run(project, {"max_train_steps": 2})
    from loradeck.trainer.events import EventWriter
    writer = EventWriter(files.events)
    writer.emit("run_started", run_id=files.run_id, config={}, environment={})
    writer.emit("run_finished", status="completed")
    writer.close()
    listed = cli("runs", "toy", "--json", root=root, check=True)
    data = json.loads(listed.stdout)
    assert [(r["run_id"], r["state"]) for r in data["runs"]] == [(files.run_id, "completed")]
    assert files.run_id in cli("runs", "toy", root=root, check=True).stdout
    stop = cli("stop", "toy", "latest", root=root)
    assert stop.returncode == 1 and "is not running (it is completed)" in stop.stderr
    resume = cli("resume", "toy", files.run_id[:-1], "--json", root=root)
    assert resume.returncode == 1 and "already completed" in json.loads(resume.stdout)["error"]


def test_configuration_doc_lists_every_key_and_flag():
    text = (DOCS / "configuration.md").read_text()
    for f in fields(TrainConfig):
        assert f"| `{f.name}` |" in text, f.name
        assert flag_for(f.name) in text, flag_for(f.name)
    for key in list(kohya_config.MAPPED) + list(kohya_config.OFF_ONLY):
        assert f"`{key}`" in text, key
    for key in kohya_config.ACCEPTED:
        stem = key.split("_")[0] + "_" if key.startswith(("wandb_", "metadata_", "huggingface_", "ddp_")) else key
        assert stem in text, key


def test_events_doc_describes_every_type_and_field():
    text = (DOCS / "events.md").read_text()
    assert set(events.OPTIONAL) == set(events.REQUIRED)
    for type_ in events.REQUIRED:
        assert f"`{type_}`" in text, type_
        for name in events.REQUIRED[type_] + events.OPTIONAL[type_]:
            assert re.search(rf"`{name}`", text), f"{type_}.{name}"
    for kind in events.ERROR_KINDS:
        assert f"`{kind}`" in text


def test_run_management_modules_import_without_torch_or_textual():
    import subprocess
    import sys

    code = ("import sys, loradeck.trainer.runs.lifecycle, loradeck.trainer.config.resolve, loradeck.trainer.config.kohya, loradeck.trainer.gpu.monitor,"
            " loradeck.trainer.cli.cmd_train, loradeck.trainer.runs.choice, loradeck.trainer.runs.launch_failure, loradeck.trainer.train.optional_packages;"
            " heavy = {'torch', 'textual', 'diffusers', 'pynvml'} & set(sys.modules);"
            " assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


def test_events_doc_names_every_command_that_prints_task_events():
    """Each subcommand with `--events` is listed among the task-event producers in docs/events.md."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    producers = sorted(name for name, p in sub.choices.items()
                       if any("--events" in a.option_strings for a in p._actions))
    assert {"import", "prep", "caption"} <= set(producers)
    section = (DOCS / "events.md").read_text().split("## Task events", 1)[1].split("\n## ", 1)[0]
    for name in producers:
        assert f"`loradeck {name} " in section, name
        assert f"**{name}**" in section, name
