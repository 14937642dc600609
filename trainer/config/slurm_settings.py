"""The `[slurm]` settings' schema: where and how a run is submitted as a Slurm batch job.

One schema for the three places that may set them, later ones winning key by key:
the user config (`~/.config/loradeck/config.toml`), the project's `project.toml`, and the command line
(`loradeck train --slurm --partition gpu --time-limit 4:00:00 ...`).

    [slurm]
    partition = "gpu"            # sbatch --partition
    account = ""                 # --account
    qos = ""                     # --qos
    gres = ""                    # --gres, e.g. "gpu:a100:1"; empty: "gpu:N" from the run's gpus when N > 0
    gpus = 1                     # GPUs on the one node (accelerate launch when > 1); 0 = a CPU-only job
    cpus = 8                     # --cpus-per-task
    mem = "32G"                  # --mem
    time_limit = "24:00:00"      # --time
    signal_seconds = 300         # the job is told this long before its time limit, saves and resubmits
    max_resubmits = 10           # how many times a run may resubmit itself after a time limit
    python = ""                  # the interpreter on the nodes; empty: the one that submits
    setup = []                   # shell lines run before the trainer (module load ..., source venv)
    extra = []                   # extra "#SBATCH ..." options, e.g. ["--constraint=a100"]

Only lint-level checks happen here; Slurm itself judges partitions, accounts and limits at submit time.
The schema sits in the config layer because the user config and project.toml validate their [slurm]
tables with it; loradeck.trainer.slurm.settings merges the three places for a submission.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from loradeck.trainer.errors import ConfigError

_TIME_RE = re.compile(r"^(\d+-)?\d+(:\d{1,2}){0,2}$|^(\d+-)?\d+:\d{1,2}:\d{1,2}$|^UNLIMITED$|^infinite$")
_MEM_RE = re.compile(r"^\d+[KMGT]?$")


@dataclass(frozen=True)
class SlurmSettings:
    partition: str = ""
    account: str = ""
    qos: str = ""
    gres: str = ""
    gpus: int = 1
    cpus: int = 4
    mem: str = ""
    time_limit: str = ""
    signal_seconds: int = 300
    max_resubmits: int = 10
    python: str = ""
    setup: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    def gres_option(self) -> str:
        """The --gres value: the explicit one, else gpu:N for N GPUs, else none."""
        if self.gres:
            return self.gres
        return f"gpu:{self.gpus}" if self.gpus > 0 else ""


KEYS = tuple(f.name for f in fields(SlurmSettings))


def validate(table: dict[str, Any], source: str) -> dict[str, Any]:
    """Check one [slurm] table (types and simple formats); returns it as plain values.

    Every problem is listed in one error, each with the file it came from.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [slurm] must be a table")
    problems = []
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(KEYS)})")
    defaults = SlurmSettings()
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in KEYS:
            continue
        default = getattr(defaults, key)
        if isinstance(default, list):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                problems.append(f"{key} must be a list of strings, got {value!r}")
                continue
            value = list(value)
        elif isinstance(default, int):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                problems.append(f"{key} must be a whole number >= 0, got {value!r}")
                continue
        elif not isinstance(value, str):
            problems.append(f"{key} must be text, got {value!r}")
            continue
        out[key] = value
    if out.get("time_limit") and not _TIME_RE.match(out["time_limit"]):
        problems.append(f"time_limit {out['time_limit']!r} is not a Slurm time (MM, HH:MM:SS or D-HH:MM:SS)")
    if out.get("mem") and not _MEM_RE.match(out["mem"]):
        problems.append(f"mem {out['mem']!r} is not a Slurm size (e.g. 32G, 16000M)")
    if "cpus" in out and out["cpus"] < 1:
        problems.append("cpus must be >= 1")
    for line in out.get("extra", []):
        if "\n" in line or not line.startswith("-"):
            problems.append(f"extra option {line!r} must be one sbatch option such as '--constraint=a100'")
        elif line.split("=")[0].split()[0] in ("--nodes", "-N", "--ntasks", "-n", "--ntasks-per-node"):
            problems.append(f"extra option {line!r}: a run is one task on one node (its GPUs through"
                            " accelerate); multi-node runs are not supported")
    if any("\n" in line for line in out.get("setup", [])):
        problems.append("setup lines must each be one line")
    if problems:
        raise ConfigError(f"{source}: [slurm] " + "; ".join(problems))
    return out


def merge(*layers: dict[str, Any]) -> SlurmSettings:
    """SlurmSettings from validated layers, lowest first (user config < project.toml < flags)."""
    settings = SlurmSettings()
    for layer in layers:
        settings = replace(settings, **{k: v for k, v in layer.items() if v is not None})
    return settings


def time_limit_seconds(text: str) -> int | None:
    """Seconds in a Slurm time string (MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS); None if unlimited."""
    if not text or text.lower() in ("unlimited", "infinite"):
        return None
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
        parts = [int(p) for p in text.split(":")] + [0, 0]
        h, m, s = parts[0], parts[1], parts[2]
        return ((days * 24 + h) * 60 + m) * 60 + s
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    return (parts[0] * 60 + parts[1]) * 60 + parts[2]
