"""Loading captioning models: synthetic, local folders, and the errors users see."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest

from loradeck.trainer.captions.blip_model import load_captioner, synthetic_model_path
from loradeck.trainer.errors import ModelError


def test_synthetic_tiny_blip_is_built_once_into_the_cache(model_cache, tiny_captioner):
    path = synthetic_model_path("blip-tiny")
    assert path.is_relative_to(model_cache) and (path / "config.json").is_file()
    mtime = (path / "config.json").stat().st_mtime_ns
    assert synthetic_model_path("blip-tiny") == path
    assert (path / "config.json").stat().st_mtime_ns == mtime  # reused, not rebuilt
    assert tiny_captioner.device.type == "cpu" and str(tiny_captioner.dtype) == "torch.float32"


def test_a_local_model_folder_loads(tmp_path, tiny_captioner):
    folder = tmp_path / "my-blip"
    shutil.copytree(synthetic_model_path("blip-tiny"), folder)
    captioner = load_captioner(str(folder), device="cpu")
    assert type(captioner.model).__name__ == "BlipForConditionalGeneration"


def test_a_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        load_captioner(str(tmp_path), device="cpu")


def test_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_captioner(str(tmp_path / "nope"), device="cpu")


def test_a_model_that_is_not_blip_is_refused_by_name(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ModelError, match="not a BLIP captioning model"):
        load_captioner(str(tmp_path), device="cpu")


def test_uncached_hub_model_offline_names_the_model_and_the_download_command(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as err:
        load_captioner("nobody-here/no-such-blip-model", device="cpu")
    line = err.value.one_line()
    assert "nobody-here/no-such-blip-model" in line and "HF_HUB_OFFLINE" in line
    assert "hf download nobody-here/no-such-blip-model" in line and "\n" not in line


def test_first_signal_asks_to_stop_and_second_ctrl_c_interrupts():
    from loradeck.trainer.cli.caption_progress import StopOnSignal

    before = signal.getsignal(signal.SIGINT)
    with StopOnSignal() as stopper:
        os.kill(os.getpid(), signal.SIGINT)
        assert stopper.is_set() and stopper.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


def test_unwritable_cache_is_a_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LORADECK_CACHE", str(blocker / "cache"))
    with pytest.raises(ModelError, match="cannot build synthetic:blip-tiny") as err:
        synthetic_model_path("blip-tiny")
    assert "LORADECK_CACHE" in err.value.one_line()


def test_cuda_runs_fp16_and_asking_for_a_missing_gpu_is_a_clear_error():
    import torch

    from loradeck.trainer.captions.blip_model import resolve_device
    from loradeck.trainer.errors import ConfigError

    assert resolve_device("cpu") == (torch.device("cpu"), torch.float32)
    if torch.cuda.is_available():
        assert resolve_device("auto") == (torch.device("cuda"), torch.float16)
    else:
        assert resolve_device("auto") == (torch.device("cpu"), torch.float32)
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu0")
