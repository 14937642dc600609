"""`--gpus N`: the accelerate launch command line, and a real `accelerate launch --cpu` run."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.events import read_all
from loradeck.trainer.runs import lifecycle as runs
from tests.runs.test_gpu_monitor import device, fake_pynvml
from tests.waiting import wait_until


def test_one_gpu_is_a_plain_python_process(tmp_path):
    assert runs.build_command(tmp_path, gpus=1, python="py") == ["py", "-m", "loradeck.trainer.train.process", str(tmp_path)]
    assert runs.build_command(tmp_path, resume=True, python="py")[-1] == "--resume"


def test_several_gpus_go_through_accelerate_launch(tmp_path):
    cmd = runs.build_command(tmp_path, gpus=4, mixed_precision="bf16", resume=True, python="py")
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"]
    args = cmd[3:]
    assert args[args.index("--num_processes") + 1] == "4" and "--multi_gpu" in args
    assert args[args.index("--mixed_precision") + 1] == "bf16"
    assert args[args.index("-m"):] == ["-m", "loradeck.trainer.train.process", str(tmp_path), "--resume"]


def test_launch_uses_the_runs_gpus_setting(project, monkeypatch):
    seen = {}

    class Popen:
        pid = 4242

        def __init__(self, cmd, **kw):
            seen["cmd"], seen["kw"] = cmd, kw

    monkeypatch.setattr(runs.subprocess, "Popen", Popen)
    files = runs.create_run(project, {"max_train_steps": 2, "gpus": 2, "mixed_precision": "fp16"})
    runs.launch(files)
    assert "accelerate.commands.launch" in seen["cmd"] and seen["cmd"][seen["cmd"].index("--num_processes") + 1] == "2"
    assert seen["kw"]["start_new_session"] is True and seen["kw"]["cwd"] == files.dir


def test_accelerate_launch_on_cpu_runs_the_trainer_and_stop_signals_the_ranks(project, fake_trainer, reap,
                                                                              monkeypatch):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.2")
    files = runs.create_run(project, {"max_train_steps": 300, "resolution": 64})
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", fake_trainer, str(files.dir)]
    proc = runs.launch(files, command=cmd, gpus=2)  # recorded as a multi-GPU launch
    reap(proc.pid)
    def stepping():
        assert proc.poll() is None, files.log.read_text()
        return runs.run_state(files) == "running" and any(e["type"] == "step" for e in read_all(files.events))

    wait_until(stepping, 60, interval=0.1, message="the rank's first step", describe=files.log.read_text)
    # The trainer is accelerate's child: the stop goes to it (the rank), not to the launcher,
    # which exits cleanly once its rank has saved and stopped.
    [rank] = runs._trainer_ranks(files)
    assert rank != proc.pid
    report = runs.stop(files, timeout=30)
    assert report["state"] == "stopped", files.log.read_text()
    assert proc.wait(timeout=30) == 0


def test_more_gpus_than_visible_is_refused_before_a_run_exists(project, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([device()]))
    with pytest.raises(LoradeckError, match="only 1 GPU"):
        runs.create_run(project, {"max_train_steps": 2, "gpus": 2})
    assert runs.run_folders(project) == []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([device(), device(uuid="GPU-b")]))
    runs.create_run(project, {"max_train_steps": 2, "gpus": 2})


@pytest.mark.parametrize("argv, is_rank", [
    (["/venv/bin/python", "-u", "-m", "loradeck.trainer.train.process", "/p/runs/x"], True),
    (["/venv/bin/python", "-m", "accelerate.commands.launch", "--multi_gpu", "-m", "loradeck.trainer.train.process", "/p"],
     False),
    (["/venv/bin/accelerate", "launch", "-m", "loradeck.trainer.train.process", "/p"], False),
    (["/venv/bin/python", "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "loradeck.trainer.train.process",
      "/p"], False),
    (["/venv/bin/torchrun", "--nproc_per_node", "2", "-m", "loradeck.trainer.train.process", "/p"], False),
    (["/venv/bin/python", "-m", "loradeck.trainer.train.process", "/home/me/accelerate-tests/runs/x"], True),
    (["/venv/bin/python", "-m", "loradeck.trainer.cli"], False),
])
def test_rank_processes_are_told_from_the_launcher(argv, is_rank):
    assert runs._is_rank(argv) is is_rank


def test_the_multi_gpu_command_line_parses_with_the_installed_accelerate(tmp_path):
    from accelerate.commands.launch import launch_command_parser

    cmd = runs.build_command(tmp_path, gpus=8, mixed_precision="fp16", resume=True)
    parsed = launch_command_parser().parse_args(cmd[3:])
    assert (parsed.multi_gpu, parsed.num_processes, parsed.num_machines) == (True, 8, 1)
    assert (parsed.mixed_precision, parsed.dynamo_backend) == ("fp16", "no")
    assert parsed.module and parsed.training_script == "loradeck.trainer.train.process"
    assert parsed.training_script_args == [str(tmp_path), "--resume"]


def _rank_of(pid: int) -> int:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return int(next(v for v in environ if v.startswith(b"RANK=")).split(b"=", 1)[1])


def _torchrun(files, *, resume: bool = False) -> list[str]:
    """Two CPU ranks under torch's own launcher (gloo): what accelerate does per GPU, on a CPU box."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
            str(29500 + os.getpid() % 1000), "-m", "loradeck.trainer.train.process", str(files.dir)] + \
        (["--resume"] if resume else [])


def _wait_for_step(files, proc, step: int) -> None:
    def reached():
        assert proc.poll() is None, files.log.read_text()[-3000:]
        return any(e["type"] == "step" and e["step"] >= step for e in read_all(files.events))

    wait_until(reached, 120, interval=0.1, message=f"step {step}", describe=lambda: files.log.read_text()[-3000:])


def test_two_real_ranks_split_the_data_agree_on_a_stop_and_resume_to_the_end(project, reap, monkeypatch):
    """The real trainer in two processes (DDP over gloo): only rank 0 writes, each rank takes its share of
    every epoch, a SIGTERM seen by rank 1 alone stops both at the same step, and --resume finishes."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from tests.runs.conftest import write_images

    write_images(project.dataset, n=8, size=64)
    total = 40
    files = runs.create_run(project, {"max_train_steps": total, "resolution": 64, "batch_size": 1,
                                      "gpus": 1, "cache_latents": True, "cache_text_embeddings": True})
    proc = runs.launch(files, command=_torchrun(files), gpus=2)
    reap(proc.pid)
    _wait_for_step(files, proc, 2)
    ranks = {_rank_of(pid): pid for pid in runs._trainer_ranks(files)}
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGTERM)  # rank 1 only: rank 0 must learn of it through the all-gather
    assert proc.wait(timeout=60) == 0, files.log.read_text()[-3000:]

    events = read_all(files.events)
    [started] = [e for e in events if e["type"] == "run_started"]  # one writer: rank 0
    assert started["batches_per_epoch"] == 4  # 8 images, batch 1, 2 ranks
    [finished] = [e for e in events if e["type"] == "run_finished"]
    assert finished["status"] == "stopped", finished
    stopped_at = finished["steps_done"]
    assert 2 <= stopped_at < total
    assert runs.run_state(files) == "stopped"
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == list(range(1, stopped_at + 1))
    assert not files.output("lora").exists()

    proc = runs.launch(files, command=_torchrun(files, resume=True), gpus=2)
    reap(proc.pid)
    assert proc.wait(timeout=180) == 0, files.log.read_text()[-3000:]
    events = read_all(files.events)
    finished = [e for e in events if e["type"] == "run_finished"][-1]
    assert finished["status"] == "completed" and finished["steps_done"] == total, finished
    resumed = [e for e in events if e["type"] == "run_started"][-1]
    assert resumed["start_step"] == stopped_at
    from safetensors.torch import load_file

    assert load_file(files.output("lora"))  # the exported adapter, written once by rank 0
