"""Validation catches each class of malformed LoRA file, and passes good ones (rules + diffusers load)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys

import pytest
import torch

from loradeck.trainer.lora.file_format import DOWN, UP, header_bytes, read_header, read_lora, save_kohya_lora
from loradeck.trainer.lora.validate import check_rules, validate
from tests.conftest import REPO, run_cli

Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def _rules(report) -> set[str]:
    return {p.rule for p in report.errors}


def test_good_file_passes_rules_and_loads_on_base(lora_path, tiny_base):
    report = validate(lora_path, base_model=str(tiny_base))
    assert report.ok, report.summary()
    assert report.layout == "kohya" and report.te_modules > 0 and report.unet_modules > 0
    assert report.ranks and set(report.ranks) == {4} and set(report.alphas) == {2.0}
    assert report.load_check == f"passed on {tiny_base}"
    assert not [p for p in report.problems if p.severity == "warning"], report.summary()


def test_load_check_is_skipped_with_a_note_when_the_base_is_not_local(lora_path):
    report = validate(lora_path)  # metadata names "tiny-base", which is not on this machine
    assert report.ok
    assert report.load_check.startswith("skipped: base model tiny-base is not available")


def test_explicit_missing_base_is_an_error(lora_path, tmp_path):
    report = validate(lora_path, base_model=str(tmp_path / "nope"))
    assert not report.ok and "load" in _rules(report)


def _mutated(tmp_path, lora_path, mutate, metadata=None, name="bad.safetensors"):
    tensors, meta = read_lora(lora_path)
    tensors = {k: v.clone() for k, v in tensors.items()}
    mutate(tensors)
    path = tmp_path / name
    keep = {k: v for k, v in meta.items() if not k.startswith("sshs_")}
    save_kohya_lora(path, tensors, metadata if metadata is not None else keep)
    return path


@pytest.mark.parametrize("mutate, rule, words", [
    (lambda t: t.pop(Q + ".alpha"), "triples", "missing alpha"),
    (lambda t: t.pop(Q + UP), "triples", "missing lora_up"),
    (lambda t: t.__setitem__(Q + DOWN, torch.randn(3, t[Q + DOWN].shape[1])), "shapes", "does not match"),
    (lambda t: t.__setitem__(Q + UP, t[Q + UP][:, :, None]), "shapes", "must both be 2-D"),
    (lambda t: t.__setitem__(Q + ".alpha", torch.tensor([2.0])), "alpha", "0-dim"),
    (lambda t: t.__setitem__(Q + ".alpha", torch.tensor(-1.0)), "alpha", "positive"),
    (lambda t: t[Q + DOWN].__setitem__((0, 0), float("nan")), "values", "NaN"),
    (lambda t: t[Q + UP].zero_(), "values", "all zeros"),
    (lambda t: t.__setitem__("lora_unet_x.hada_w1_a", torch.zeros(2, 2)), "keys", "not a kohya LoRA key"),
    (lambda t: t.__setitem__("text_model.foo.weight", torch.zeros(2, 2)), "keys", "not a kohya LoRA key"),
], ids=["no-alpha", "no-up", "rank-mismatch", "3d-up", "1d-alpha", "negative-alpha", "nan", "zero-up",
        "lycoris-key", "stray-key"])
def test_each_malformed_module_is_caught(tmp_path, lora_path, mutate, rule, words):
    report = check_rules(_mutated(tmp_path, lora_path, mutate))
    assert not report.ok
    assert rule in _rules(report), report.summary()
    assert any(words in p.message for p in report.errors), report.summary()


def test_non_string_metadata_is_caught(tmp_path, lora_path):
    info, meta = read_header(lora_path)
    data = lora_path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    path = tmp_path / "intmeta.safetensors"
    path.write_bytes(header_bytes(info, {**meta, "ss_network_dim": 4}) + data[8 + n:])
    report = check_rules(path)
    assert "metadata" in _rules(report) and any("ss_network_dim" in p.message for p in report.errors)


def test_tampered_tensor_bytes_fail_the_hash(tmp_path, lora_path):
    data = bytearray(lora_path.read_bytes())
    data[-3] ^= 0x01  # one bit in the last tensor
    path = tmp_path / "tampered.safetensors"
    path.write_bytes(bytes(data))
    report = check_rules(path)
    assert _rules(report) == {"hash"}, report.summary()


def test_bad_tag_frequency_json_is_caught(tmp_path, lora_path):
    _, meta = read_lora(lora_path)
    path = _mutated(tmp_path, lora_path, lambda t: None, metadata={**meta, "ss_tag_frequency": "{not json"})
    assert "metadata" in _rules(check_rules(path))


def test_missing_kohya_metadata_is_a_warning_not_a_failure(tmp_path, lora_path):
    report = check_rules(_mutated(tmp_path, lora_path, lambda t: None, metadata={}))
    assert report.ok
    assert any(p.rule == "metadata" and "ss_network_dim" in p.message for p in report.problems)


@pytest.mark.parametrize("content", [b"", b"not a safetensors file at all", b"\x08\x00\x00\x00\x00\x00\x00\x00[1,2,3] "])
def test_garbage_files_fail_structure(tmp_path, content):
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    assert _rules(check_rules(path)) == {"structure"}


def test_module_that_matches_no_layer_fails_the_load_check(tmp_path, lora_path, tiny_base):
    def add_foreign(t):  # well-formed, but the base model has no such block: diffusers silently drops it
        t["lora_unet_down_blocks_7_attentions_0_proj_in.lora_down.weight"] = torch.randn(4, 32)
        t["lora_unet_down_blocks_7_attentions_0_proj_in.lora_up.weight"] = torch.randn(32, 4)
        t["lora_unet_down_blocks_7_attentions_0_proj_in.alpha"] = torch.tensor(4.0)
    path = _mutated(tmp_path, lora_path, add_foreign)
    assert check_rules(path).ok
    report = validate(path, base_model=str(tiny_base))
    assert not report.ok and report.load_check == "failed"
    assert any("down_blocks_7_attentions_0_proj_in" in p.message for p in report.errors), report.summary()


def test_ldm_module_names_fail_the_rules(tmp_path, lora_path):
    def add_ldm(t):
        t["lora_unet_input_blocks_1_1_proj_in.lora_down.weight"] = torch.randn(4, 32)
        t["lora_unet_input_blocks_1_1_proj_in.lora_up.weight"] = torch.randn(32, 4)
        t["lora_unet_input_blocks_1_1_proj_in.alpha"] = torch.tensor(4.0)
    report = check_rules(_mutated(tmp_path, lora_path, add_ldm))
    assert _rules(report) == {"keys"} and "LDM" in report.errors[0].message


def test_cli_validate_lists_problems_and_exits_nonzero(tmp_path, lora_path):
    bad = _mutated(tmp_path, lora_path, lambda t: (t.pop(Q + ".alpha"), t[Q + UP].zero_()))
    proc = run_cli("validate", str(bad), "--no-load-check")
    assert proc.returncode == 1
    assert "INVALID" in proc.stdout and "missing alpha" in proc.stdout and "all zeros" in proc.stdout
    # The report is the output; stderr carries the one-line verdict like every failing command.
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"error: {bad} is not a valid LoRA: ")
    assert "more problem(s)" in proc.stderr
    proc = run_cli("validate", str(bad), "--no-load-check", "--json")
    data = json.loads(proc.stdout)
    assert proc.returncode == 1 and data["ok"] is False and len(data["problems"]) >= 2


def test_cli_validate_rejects_diffusers_layout_and_suggests_convert(tmp_path):
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import get_peft_model_state_dict

    from tests.publish.tiny_models import ATTENTION_TARGETS, add_random_lora, tiny_unet

    unet = add_random_lora(tiny_unet(), ATTENTION_TARGETS, rank=4, alpha=4)
    sd = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(tmp_path, unet_lora_layers=sd, weight_name="d.safetensors")
    proc = run_cli("validate", str(tmp_path / "d.safetensors"))
    assert proc.returncode == 1
    assert "diffusers" in proc.stdout and "loradeck convert" in proc.stdout
    assert proc.stderr.count("\n") == 1 and "is not a valid LoRA" in proc.stderr
    assert proc.stderr.count("loradeck convert") == 1


def test_cli_validate_of_a_missing_path_is_a_one_line_error(tmp_path):
    for path, what in ((tmp_path / "nope.safetensors", "does not exist"), (tmp_path, "is a folder")):
        proc = run_cli("validate", str(path), "--json")
        assert proc.returncode == 1 and json.loads(proc.stdout)["ok"] is False
        assert proc.stderr == f"error: {path} {what}" + (", not a LoRA file" if path == tmp_path else "") + "\n"


@pytest.mark.slow
def test_isolated_load_check_runs_without_torch_in_the_caller(lora_path, tiny_base):
    """The TUI's path: the load check runs in a child process (`python -m loradeck.trainer validate --base B --json`,
    the CLI) and reports its verdict, while the calling process never imports torch."""
    code = ("import sys; from loradeck.trainer.lora.validate import validate;"
            "r = validate(sys.argv[1], base_model=sys.argv[2], isolate=True);"
            "print(r.ok, r.load_check, 'torch' in sys.modules, 'diffusers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, str(lora_path), str(tiny_base)], capture_output=True,
                          text=True, cwd=REPO)
    assert proc.stdout.strip() == f"True passed on {tiny_base} False False", proc.stdout + proc.stderr[-2000:]


def test_rules_never_import_torch(lora_path):
    code = ("import sys; from loradeck.trainer.lora.validate import check_rules; r = check_rules(sys.argv[1]);"
            "assert r.ok, r.summary(); assert 'torch' not in sys.modules; print('ok')")
    proc = subprocess.run([sys.executable, "-c", code, str(lora_path)], capture_output=True, text=True, cwd=REPO)
    assert proc.stdout.strip() == "ok", proc.stderr


@pytest.mark.parametrize("precision", ["fp16", "bf16", "fp32"])
def test_nan_inf_and_zero_weights_are_caught_in_every_precision(tmp_path, lora_path, precision):
    tensors, _ = read_lora(lora_path)
    tensors = {k: v.float().clone() for k, v in tensors.items()}
    good = tmp_path / "good.safetensors"
    save_kohya_lora(good, tensors, {}, precision=precision)
    assert check_rules(good).ok
    tensors[Q + DOWN][1, 2] = float("inf")
    tensors[Q.replace("attn1", "attn2") + UP].zero_()
    tensors[Q.replace("attn1", "attn2") + UP][0, 0] = -0.0  # negative zero is still no effect
    bad = tmp_path / "bad.safetensors"
    save_kohya_lora(bad, tensors, {}, precision=precision)
    messages = " ".join(p.message for p in check_rules(bad).errors)
    assert "NaN or infinite" in messages and "all zeros" in messages


def test_cli_validate_with_the_load_check_prints_only_its_verdict(lora_path, tiny_base):
    """No library chatter (transformers' torchvision fallback notes, diffusers' notes) on stderr."""
    proc = run_cli("validate", str(lora_path), "--base", str(tiny_base))
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout and "load check passed" in proc.stdout
    assert proc.stderr == ""
