"""Frozen weights load straight into the run's dtype (trainer/train/dtype_loading.py): the same values as
the library's loader cast afterwards, with no whole fp32 copy on the way."""

from __future__ import annotations

import shutil

import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from loradeck.trainer.train import dtype_loading, models

COMPONENTS = [(UNet2DConditionModel, "unet", False), (AutoencoderKL, "vae", False),
              (CLIPTextModel, "text_encoder", True)]


def _library(cls, folder, dtype, transformers_model):
    return cls.from_pretrained(folder, use_safetensors=True,
                               **({"dtype": dtype} if transformers_model else {"torch_dtype": dtype}))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("cls,sub,transformers_model", COMPONENTS)
def test_streamed_weights_equal_the_librarys_bit_for_bit(tiny_model, cls, sub, transformers_model, dtype):
    streamed = dtype_loading._streamed(cls, tiny_model / sub, dtype, transformers_model)
    assert streamed is not None, "the standard layout must take the streamed path"
    reference = _library(cls, tiny_model / sub, dtype, transformers_model)
    ours, theirs = streamed.state_dict(), reference.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].dtype == theirs[key].dtype and torch.equal(ours[key], theirs[key]), key
    assert not streamed.training
    if transformers_model:
        ids = torch.arange(4).unsqueeze(0) % streamed.config.vocab_size
        with torch.no_grad():
            assert torch.equal(streamed(ids).last_hidden_state, reference(ids).last_hidden_state)
    else:
        assert dict(streamed.config) == dict(reference.config)  # the VAE's identity (latent cache key) too


def test_the_file_is_read_one_tensor_at_a_time_and_cast_as_read(tiny_model):
    path = tiny_model / "unet" / "diffusion_pytorch_model.safetensors"
    seen = []
    for name, tensor in dtype_loading.read_tensors(path, torch.bfloat16):
        seen.append(name)
        assert tensor.dtype == torch.bfloat16 or not tensor.is_floating_point()
    assert len(seen) == len(set(seen)) > 10


def test_a_run_loads_its_frozen_weights_in_its_dtypes(tiny_model, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("from_pretrained would hold the whole fp32 state dict")

    monkeypatch.setattr(UNet2DConditionModel, "from_pretrained", refuse)
    model = models.load_base_model(str(tiny_model), dtype=torch.bfloat16, vae_dtype=torch.float32)
    assert {p.dtype for p in model.unet.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.text_encoder.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.vae.parameters()} == {torch.float32}


def test_a_layout_the_reader_does_not_know_falls_back_to_the_library(tiny_model, tmp_path):
    folder = tmp_path / "unet"
    shutil.copytree(tiny_model / "unet", folder)
    # A name the reader does not look for (as a sharded checkpoint's would be): the library loads it.
    (folder / "diffusion_pytorch_model.safetensors").rename(folder / "diffusion_pytorch_model-00001.safetensors")
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(
        '{"metadata": {}, "weight_map": {}}')
    assert dtype_loading._streamed(UNet2DConditionModel, folder, torch.bfloat16, False) is None
