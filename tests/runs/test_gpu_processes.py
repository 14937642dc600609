"""Who is on which GPU (`loradeck gpus`), the GPU picker (`--gpu INDEX|auto`) and the memory a run
needs (loradeck.trainer.gpu.run_memory), against a scripted NVML."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import psutil
import pytest

from loradeck.trainer.config.train_config import TrainConfig
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.gpu import processes as gpu_processes
from loradeck.trainer.gpu import run_memory
from loradeck.trainer.runs import lifecycle as runs
from tests.runs.queue_helpers import GiB, ScriptedNvml, call, call_json, load_fake_pynvml
from tests.waiting import wait_until


@pytest.fixture
def gpus(tmp_path, monkeypatch):
    script = ScriptedNvml(tmp_path / "nvml.json").save()
    monkeypatch.setenv("FAKE_NVML_FILE", str(script.path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", load_fake_pynvml())
    return script


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_gpus_lists_every_process_with_user_command_memory_and_free_memory(gpus, capsys, sleeper):
    gpus.gpu(name="NVIDIA A100", total=40 * GiB, used=9 * GiB,
             compute=[(os.getpid(), 6 * GiB), (999_999_999, 1 * GiB)], graphics=[(sleeper.pid, 2 * GiB)])
    gpus.gpu(name="NVIDIA L4", total=24 * GiB, used=0)
    data = call_json(capsys, "gpus")
    assert data["_code"] == 0 and data["available"] is True
    first, second = data["gpus"]
    assert (first["index"], first["mem_free"], second["mem_free"]) == (0, 31 * GiB, 24 * GiB)
    by_pid = {p["pid"]: p for p in first["processes"]}
    me = by_pid[os.getpid()]
    assert (me["user"], me["memory"], me["kind"]) == (psutil.Process().username(), 6 * GiB, "compute")
    assert me["command"] == " ".join(psutil.Process().cmdline())
    assert (by_pid[sleeper.pid]["kind"], by_pid[sleeper.pid]["command"]) == ("graphics", "sleep 60")
    assert by_pid[999_999_999]["user"] is None  # not in our pid namespace: NVML's numbers only
    assert [p["pid"] for p in first["processes"]][0] == os.getpid()  # biggest first
    code, out, _ = call(capsys, "gpus")
    assert "GPU 0  NVIDIA A100  31.0 GiB free of 40.0 GiB  (3 processes)" in out
    assert "GPU 1  NVIDIA L4  24.0 GiB free of 24.0 GiB  (0 processes)" in out


def test_gpus_without_nvml_says_so_once(gpus, capsys):
    gpus.no_nvml("NVML Shared Library Not Found")
    code, out, _ = call(capsys, "gpus")
    assert code == 0 and out.strip().count("\n") == 0 and "NVML Shared Library Not Found" in out
    data = call_json(capsys, "gpus")
    assert data["available"] is False and data["gpus"] == [] and "Not Found" in data["reason"]


def test_a_runs_own_processes_are_marked(gpus, sleeper):
    gpus.gpu(compute=[(sleeper.pid, GiB), (os.getpid(), GiB)])
    [gpu] = gpu_processes.snapshot(ours=gpu_processes.run_processes(sleeper.pid)).gpus
    assert {p.pid: p.ours for p in gpu.processes} == {sleeper.pid: True, os.getpid(): False}


def test_gpu_auto_picks_the_gpu_with_most_free_memory_that_fits(gpus):
    gpus.gpu(total=24 * GiB, used=20 * GiB, uuid="GPU-a")
    gpus.gpu(total=24 * GiB, used=4 * GiB, uuid="GPU-b")
    gpus.gpu(total=24 * GiB, used=10 * GiB, uuid="GPU-c")
    cfg = TrainConfig(base_model="stable-diffusion-v1-5/stable-diffusion-v1-5", resolution=512)
    [chosen] = gpu_processes.pick_gpus(cfg, "auto")
    assert chosen.uuid == "GPU-b"
    assert gpu_processes.visible_env([chosen])["CUDA_VISIBLE_DEVICES"] == "GPU-b"
    assert [g.index for g in gpu_processes.pick_gpus(cfg, 2)] == [2]
    with pytest.raises(LoradeckError, match="does not fit now"):
        gpu_processes.pick_gpus(TrainConfig(base_model="sdxl", resolution=2048, batch_size=8), "auto")
    with pytest.raises(LoradeckError, match="not visible"):
        gpu_processes.pick_gpus(cfg, 7)
    with pytest.raises(LoradeckError, match="expected a GPU index"):
        gpu_processes.parse_gpu("first")


def test_gpu_auto_on_a_box_without_nvml_changes_nothing(gpus):
    gpus.no_nvml()
    assert gpu_processes.pick_gpus(TrainConfig(), "auto") is None
    with pytest.raises(LoradeckError, match="no GPU is visible"):
        gpu_processes.pick_gpus(TrainConfig(), 0)


def test_train_gpu_auto_gives_the_trainer_that_gpu_and_a_full_gpu_is_refused_before_a_run_exists(
        project, gpus, fake_trainer, capsys, reap):
    gpus.gpu(total=24 * GiB, used=23 * GiB, uuid="GPU-full")
    gpus.gpu(total=24 * GiB, used=1 * GiB, uuid="GPU-free")
    data = call_json(capsys, "train", "toy", "--resolution", "64", "--steps", "3", "--gpu", "auto", "--detach")
    reap(data["pid"])
    files = runs.RunFiles(Path(data["run_dir"]))
    wait_until(lambda: runs.run_state(files) == "completed", 20)
    assert "CUDA_VISIBLE_DEVICES=GPU-free" in files.log.read_text()
    assert os.environ.get("CUDA_VISIBLE_DEVICES") is None  # only the child got it
    before = sorted(project.runs.iterdir())
    code, _, err = call(capsys, "train", "toy", "--resolution", "64", "--gpu", "0", "--steps", "3")
    assert code == 0  # an index is taken as asked (the user chose it)
    code, _, err = call(capsys, "train", "toy", "--resolution", "512", "--batch-size", "64", "--gpu", "auto")
    assert code == 1 and err.count("\n") == 1 and "does not fit now" in err and "--queue" in err
    assert len(sorted(project.runs.iterdir())) == len(before) + 1


def test_required_bytes_uses_the_estimator_when_there_and_a_generous_rule_otherwise(monkeypatch):
    cfg = TrainConfig(base_model="stable-diffusion-v1-5/stable-diffusion-v1-5", resolution=512, batch_size=1)
    monkeypatch.setitem(sys.modules, run_memory.ESTIMATE_MODULE, None)  # not importable
    guess = run_memory.required_bytes(cfg)
    assert guess == run_memory.heuristic_bytes(cfg) and 5 * GiB < guess < 12 * GiB
    assert run_memory.source() == "rule of thumb"
    bigger = TrainConfig(base_model=cfg.base_model, resolution=768, batch_size=4)
    checkpointed = TrainConfig(base_model=cfg.base_model, resolution=512, gradient_checkpointing=True)
    assert run_memory.heuristic_bytes(bigger) > guess > run_memory.heuristic_bytes(checkpointed)
    assert run_memory.heuristic_bytes(TrainConfig(base_model="synthetic:sdxl")) > guess


ESTIMATOR = """
import os, types
def estimate(cfg):
    with open(os.environ["FAKE_ESTIMATE_MARKER"], "a") as fh:
        fh.write(f"{os.getpid()} {cfg.resolution}\\n")
    smi = None if os.environ.get("FAKE_ESTIMATE_NO_SMI") else 4 * 1024 ** 3
    return types.SimpleNamespace(expected_peak_bytes=3 * 1024 ** 3, nvidia_smi_bytes=smi)
"""


def test_the_estimator_runs_in_a_subprocess_unless_torch_is_already_loaded(tmp_path, monkeypatch):
    """A torch-free caller (TUI, waiter) never runs the estimator (which imports torch) itself."""
    (tmp_path / "fake_vram_estimate.py").write_text(ESTIMATOR)
    marker = tmp_path / "called.txt"
    monkeypatch.setattr(run_memory, "ESTIMATE_MODULE", "fake_vram_estimate")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_ESTIMATE_MARKER", str(marker))
    cfg = TrainConfig(base_model="stable-diffusion-v1-5/stable-diffusion-v1-5", resolution=768)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert run_memory.required_bytes(cfg) == 4 * GiB and run_memory.source() == "estimate"
    [(pid, resolution)] = [line.split() for line in marker.read_text().splitlines()]
    assert int(pid) != os.getpid() and resolution == "768"  # the config travelled whole
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))  # a process with torch loaded
    monkeypatch.setenv("FAKE_ESTIMATE_NO_SMI", "1")
    assert run_memory.required_bytes(cfg) == 3 * GiB + run_memory.CUDA_CONTEXT
    assert int(marker.read_text().splitlines()[-1].split()[0]) == os.getpid()
