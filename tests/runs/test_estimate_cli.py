"""`loradeck estimate`, and `loradeck train` refusing a run that does not fit the GPU (NVML faked)."""

from __future__ import annotations

import json

from loradeck.trainer.cli import main
from tests.runs.test_gpu_monitor import GiB, device, nvml  # noqa: F401  (nvml is a fixture)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_estimate_prints_the_breakdown_and_says_there_is_no_gpu(project, root, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)  # no NVML on this machine
    code, out, _ = run(capsys, "--root", str(root), "estimate", "toy", "--resolution", "64", "--batch-size", "2")
    assert code == 0
    for part in ("frozen weights", "adapter weights", "optimizer state", "activations", "CUDA context",
                 "peak allocated", "nvidia-smi"):
        assert part in out, part
    assert "no NVIDIA GPU seen" in out
    code, out, _ = run(capsys, "--root", str(root), "estimate", "toy", "--resolution", "64", "--json")
    data = json.loads(out)
    assert data["gpus"] == [] and data["fits"] is None
    est = data["estimate"]
    assert est["expected_peak_bytes"] == sum(est["breakdown"].values())
    assert est["config"]["resolution"] == 64 and est["config"]["base_model"] == "synthetic:tiny"


def test_estimate_compares_with_each_gpus_free_memory_and_advises_a_knob(project, root, capsys, nvml):
    from loradeck.trainer.config.train_config import TrainConfig
    from loradeck.trainer.gpu import vram_estimate

    base = dict(base_model="synthetic:tiny", resolution=64, batch_size=2)
    cached = vram_estimate.estimate(TrainConfig(**base, cache_latents=True))
    plain = vram_estimate.estimate(TrainConfig(**base))
    assert cached.nvidia_smi_bytes < plain.nvidia_smi_bytes
    free = cached.nvidia_smi_bytes  # room for the cached run only
    nvml(device(total=80 * GiB, used=80 * GiB - free), device(uuid="GPU-bbbb", total=80 * GiB, used=GiB))
    code, out, _ = run(capsys, "--root", str(root), "estimate", "toy", "--resolution", "64", "--batch-size", "2",
                       "--json")
    data = json.loads(out)
    assert [g["fits"] for g in data["gpus"]] == [False, True]
    assert data["target"] == [0] and data["fits"] is False
    assert data["advice"]["changes"] == ["--cache-latents"]


def test_train_refuses_a_run_that_does_not_fit_and_force_starts_it(project, root, capsys, nvml, fake_trainer,
                                                                   reap):
    nvml(device(total=GiB, used=GiB - 64 * 2 ** 20))  # 64 MiB free: less than any CUDA context
    argv = ["--root", str(root), "train", "toy", "--steps", "2", "--resolution", "64", "--detach"]
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == ""
    assert err.startswith("error: the run needs about") and "GPU 0 has 0.06 GiB free" in err
    assert "--force" in err and err.count("\n") == 1
    assert list((project.path / "runs").iterdir()) == []
    code, out, err = run(capsys, *argv, "--force", "--json")
    assert code == 0
    reap(json.loads(out)["pid"])
    assert len(list((project.path / "runs").iterdir())) == 1


def test_train_starts_without_an_estimate_where_there_is_no_gpu(project, root, capsys, monkeypatch, fake_trainer,
                                                                reap):
    from loradeck.trainer.gpu import vram_estimate

    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)
    monkeypatch.setattr(vram_estimate, "estimate", lambda cfg: (_ for _ in ()).throw(AssertionError("estimated")))
    code, out, _ = run(capsys, "--root", str(root), "train", "toy", "--steps", "2", "--detach", "--json")
    assert code == 0
    reap(json.loads(out)["pid"])


def test_estimate_answers_for_an_sdxl_project_with_its_breakdown(root, capsys, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)
    code, _, _ = run(capsys, "--root", str(root), "init", "xl", "--base-model", "synthetic:sdxl-tiny")
    assert code == 0
    code, out, err = run(capsys, "--root", str(root), "estimate", "xl", "--resolution", "64")
    assert code == 0, err
    assert "synthetic:sdxl-tiny at 64 px" in out
    for part in ("frozen weights", "adapter weights", "activations", "inputs", "peak allocated", "nvidia-smi"):
        assert part in out, part
    code, out, _ = run(capsys, "--root", str(root), "estimate", "xl", "--resolution", "64", "--json")
    est = json.loads(out)["estimate"]
    assert code == 0 and est["config"]["base_model"] == "synthetic:sdxl-tiny"
    assert est["expected_peak_bytes"] == sum(est["breakdown"].values()) and est["breakdown"]["activations"] > 0
