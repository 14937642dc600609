"""A crafted finished run with samples (3 steps × 2 prompts), checkpoints and a final LoRA."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from loradeck.trainer.dataset.project import Project
from loradeck.trainer.events import dumps
from loradeck.trainer.runs.files import RunFiles

PROMPTS = ["sks, a red hat", "sks, a blue coat"]
RUN_ID = "20261130-120000-sa01"


def make_sampled_run(project: Project, *, lora=None, run_id: str = RUN_ID, missing: tuple = ()) -> RunFiles:
    """Samples at steps 2, 4 and 6 (6 is the final step), checkpoints at 2 and 4 (4 is written by `lora`,
    a function writing a real LoRA file to a path, else 2 is a stub), the final LoRA; the sample
    (step, prompt index) pairs in `missing` were never made. Each sample's colour encodes its step."""
    files = RunFiles(project.run_dir(run_id))
    files.samples.mkdir(parents=True)
    files.checkpoints.mkdir()
    (files.dir / "config.toml").write_text(
        'base_model = "synthetic:tiny"\noutput_name = "lora"\nsample_prompts = ' + json.dumps(PROMPTS) + "\n")
    events = [{"type": "run_started", "time": 1.0, "run_id": run_id, "config": {}, "environment": {}}]
    for step in (2, 4, 6):
        for k, prompt in enumerate(PROMPTS):
            if (step, k) in missing:
                continue
            path = files.samples / f"step{step:08d}-{k:02d}.png"
            Image.new("RGB", (32, 32), (40 * step, 100 * k, 30)).save(path)
            events.append({"type": "sample", "time": 1.0 + step, "step": step, "path": str(path),
                           "prompt": prompt, "index": k})
    for step in (2, 4):
        target = files.checkpoint("lora", step)
        if lora is not None and step == 4:
            lora(target)
        else:
            target.write_bytes(b"stub")
    files.output("lora").write_bytes(b"final")
    events.append({"type": "run_finished", "time": 10.0, "status": "completed",
                   "output": str(files.output("lora")), "steps_done": 6})
    files.events.write_text("".join(dumps(e) + "\n" for e in events))
    files.status.write_text(json.dumps({"pid": 999999, "heartbeat": 1.0, "state": "completed"}))
    return files


def sample_colour(step: int, k: int) -> tuple[int, int, int]:
    return (40 * step, 100 * k, 30)


def path_of(files: RunFiles, step: int, k: int) -> Path:
    return files.samples / f"step{step:08d}-{k:02d}.png"
