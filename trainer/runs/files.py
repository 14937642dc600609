"""The files of one training run (runs/<run-id>/), named in one place.

    config.toml           the fully resolved TrainConfig (plus the project/dataset it trains on)
    events.jsonl          append-only events (loradeck.trainer.events)
    train.log             the trainer process's stdout/stderr
    status.json           pid, heartbeat, state; written atomically by the trainer process
    launch.json           what the launcher started: pid/pgid, host, time, command (loradeck.trainer.runs.lifecycle)
    slurm.json, slurm.sbatch   a Slurm run's job chain and batch script (loradeck.trainer.slurm.batch)
    slurm-<job>.out, .slurm.lock   a Slurm job's own output; the lock around slurm.json
    queue.json            the run waits in the queue: its ticket, GPU choice, need (loradeck.trainer.runs.queue)
    state/step-<N>/       resumable training state (weights, optimizer, scheduler, step, RNG)
    checkpoints/          kohya-format LoRA files saved during training
    samples/              sample images (PNG)
    <output_name>.safetensors   the final LoRA
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loradeck.trainer.atomic import atomic_write_text
from loradeck.trainer.runs.states import FINISHED, RunState

# What the trainer writes as status.json's `state` (never queued or crashed: readers decide those).
STATUS_STATES = (RunState.STARTING, RunState.RUNNING, RunState.STOPPING, *FINISHED)
HEARTBEAT_SECONDS = 2.0


@dataclass(frozen=True)
class RunFiles:
    dir: Path

    @property
    def run_id(self) -> str:
        return self.dir.name

    @property
    def config(self) -> Path:
        return self.dir / "config.toml"

    @property
    def events(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def log(self) -> Path:
        return self.dir / "train.log"

    @property
    def status(self) -> Path:
        return self.dir / "status.json"

    @property
    def launch(self) -> Path:
        return self.dir / "launch.json"

    @property
    def slurm_record(self) -> Path:
        """slurm.json: the run's Slurm job chain (loradeck.trainer.slurm.batch)."""
        return self.dir / "slurm.json"

    @property
    def slurm_script(self) -> Path:
        """slurm.sbatch: the batch script `loradeck train --slurm` submitted (loradeck.trainer.slurm.batch)."""
        return self.dir / "slurm.sbatch"

    @property
    def slurm_lock(self) -> Path:
        """.slurm.lock: held while slurm.json is read, changed and written (login node and job both do)."""
        return self.dir / ".slurm.lock"

    @property
    def slurm_output(self) -> Path:
        """slurm-%j.out: sbatch's --output pattern (Slurm puts the job id for %j)."""
        return self.dir / "slurm-%j.out"

    @property
    def queue(self) -> Path:
        return self.dir / "queue.json"

    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def checkpoints(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def samples(self) -> Path:
        return self.dir / "samples"

    def output(self, output_name: str) -> Path:
        return self.dir / f"{output_name}.safetensors"

    def checkpoint(self, output_name: str, step: int) -> Path:
        """The kohya-format LoRA saved at `step`: checkpoints/<output_name>-step<8 digits>.safetensors."""
        return self.checkpoints / f"{output_name}-step{step:08d}.safetensors"

    def checkpoint_files(self, output_name: str) -> dict[int, Path]:
        """{step: file} of the checkpoints saved so far, in step order."""
        pattern = re.compile(re.escape(output_name) + r"-step(\d+)\.safetensors")
        found = {}
        for path in self.checkpoints.glob(f"{output_name}-step*.safetensors"):
            m = pattern.fullmatch(path.name)
            if m and path.is_file():
                found[int(m.group(1))] = path
        return dict(sorted(found.items()))


def write_status(files: RunFiles, **fields: Any) -> dict[str, Any]:
    """Replace status.json atomically; `heartbeat` is set to now."""
    status = {"pid": os.getpid(), "heartbeat": time.time(), **fields}
    atomic_write_text(files.status, json.dumps(status))
    return status


def read_status(files: RunFiles) -> dict[str, Any] | None:
    try:
        return json.loads(files.status.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
