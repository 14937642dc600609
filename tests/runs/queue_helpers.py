"""Helpers for the queue tests: a scripted NVML file shared with subprocess waiters, CLI calls in
this process (so the fake trainer module patched into loradeck.trainer.runs.lifecycle is what queued runs will run)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from loradeck.trainer import cli

FAKE_NVML_DIR = Path(__file__).parent / "fake_nvml"
GiB = 1024 ** 3


def load_fake_pynvml():
    spec = importlib.util.spec_from_file_location("pynvml", FAKE_NVML_DIR / "pynvml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ScriptedNvml:
    """The JSON file the fake pynvml reads on every call; `set_used` changes a GPU's used memory."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict = {"devices": []}

    def gpu(self, name="NVIDIA RTX 4090", total=24 * GiB, used=0, compute=(), graphics=(), uuid=None):
        index = len(self.data["devices"])
        self.data["devices"].append({"name": name, "uuid": uuid or f"GPU-{index:04d}-fake", "total": total,
                                     "used": used, "compute": [list(p) for p in compute],
                                     "graphics": [list(p) for p in graphics]})
        return self.save()

    def no_nvml(self, reason="Driver Not Loaded"):
        self.data = {"devices": [], "init_error": reason}
        return self.save()

    def set_used(self, index: int, used: int):
        self.data["devices"][index]["used"] = used
        return self.save()

    def save(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        tmp.replace(self.path)
        return self


def call(capsys, *args: str) -> tuple[int, str, str]:
    """`loradeck ARGS` in this process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def call_json(capsys, *args: str) -> dict:
    code, out, err = call(capsys, *args, "--json")
    data = json.loads(out.strip().splitlines()[-1])
    data["_code"], data["_stderr"] = code, err
    return data
