"""Publishing: exports from runs are valid and loadable, atomic under failures, never overwrite silently."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import time

import pytest

from loradeck.trainer.atomic import sweep_stale_temporaries
from loradeck.trainer.errors import LoradeckError
from loradeck.trainer.lora.file_format import file_model_hash, read_header
from loradeck.trainer.lora.publish import (
    PublishError,
    export_run,
    latest_sample,
    publish_adapter,
    resolve_destination,
)
from loradeck.trainer.lora.shared_folder import list_adapters
from loradeck.trainer.lora.validate import check_rules, validate
from tests.conftest import REPO, run_cli
from tests.publish.conftest import make_run


def snapshot(folder):
    """Every entry of `folder` (hidden ones too) with its bytes."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_export_of_a_real_training_run_passes_validation_and_loads(root, shared, tmp_path):
    """The trainer's own output (synthetic:tiny, two steps, one sample) exports, validates and loads."""
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (80, 80), (40 * i, 120, 200)).save(images / f"{i}.png")
        (images / f"{i}.txt").write_text(f"sks, red hat, pose {i}")
    for args in (("init", "hero", "--trigger", "sks"), ("import", "hero", str(images)),
                 ("prep", "hero", "--resolution", "64")):
        proc = run_cli(*args, root=root)
        assert proc.returncode == 0, proc.stderr
    proc = run_cli("train", "hero", "--base-model", "synthetic:tiny", "--steps", "2", "--resolution", "64",
                   "--mixed-precision", "no", "--targets", "kohya", "--sample-prompt", "sks",
                   "--sample-every-steps", "2", "--sample-steps", "2", "--json", root=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = json.loads(proc.stdout)["run_id"]
    result = export_run("hero", root=root, to=shared, name="hero-style")
    assert result.run == run_id and result.load_check == "passed on synthetic:tiny", result
    assert sorted(p.name for p in shared.iterdir()) == ["hero-style.json", "hero-style.preview.png",
                                                        "hero-style.safetensors"]
    report = validate(result.adapter, base_model="synthetic:tiny")
    assert report.ok and report.load_check.startswith("passed"), report.summary()
    assert not [p for p in report.problems if p.severity == "warning"], report.summary()
    run_dir = root / "hero" / "runs" / run_id
    assert file_model_hash(result.adapter) == file_model_hash(run_dir / "lora.safetensors")
    assert (shared / "hero-style.preview.png").read_bytes() == latest_sample(run_dir).read_bytes()


def test_cli_export_publishes_adapter_sidecar_and_latest_sample(project, lora_bytes, tiny_base, shared):
    run_dir = make_run(project, lora_bytes, base_model=str(tiny_base))
    proc = run_cli("export", "heroes", "--to", str(shared), "--no-load-check", "--json", root=project.root)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["ok"] and data["name"] == "mylora" and data["run"] == run_dir.name
    assert data["load_check"] == "skipped: disabled"
    # no run named: the command says which it took, on stderr and in --json
    assert data["chosen"] == "the newest run of heroes with a final LoRA"
    assert f"run {run_dir.name}: the newest run of heroes with a final LoRA" in proc.stderr
    published = shared / "mylora.safetensors"
    assert sorted(p.name for p in shared.iterdir()) == ["mylora.json", "mylora.preview.png", "mylora.safetensors"]
    assert check_rules(published).ok
    # same tensors as the run's file, and the hash the header claims
    assert file_model_hash(published) == file_model_hash(run_dir / "mylora.safetensors") == data["sshs_model_hash"]
    # the preview is the run's latest sample
    assert (shared / "mylora.preview.png").read_bytes() == (run_dir / "samples" / "step-000100-0.png").read_bytes()


def test_export_load_checks_against_the_runs_base_model(project, lora_bytes, tiny_base, shared):
    make_run(project, lora_bytes, base_model=str(tiny_base))
    result = export_run("heroes", root=project.root, to=shared)
    assert result.load_check == f"passed on {tiny_base}"
    assert validate(result.adapter, base_model=str(tiny_base)).ok


def test_sidecar_agrees_with_the_adapter_metadata(project, lora_bytes, tiny_base, shared):
    make_run(project, lora_bytes, base_model=str(tiny_base))
    result = export_run("heroes", root=project.root, to=shared, load_check=False)
    _, meta = read_header(result.adapter)
    side = json.loads((shared / "mylora.json").read_text())
    info = side["loradeck"]
    assert info["base_model"] == meta["loradeck_base_model"] or info["base_model"] == meta["ss_sd_model_name"]
    assert info["base_model_version"] == meta["ss_base_model_version"] == "sd_v1"
    assert str(info["rank"]) == meta["ss_network_dim"] and float(meta["ss_network_alpha"]) == info["alpha"]
    assert f"({info['resolution']}, {info['resolution']})" == meta["ss_resolution"]
    assert str(info["steps"]) == meta["ss_steps"] and str(info["dataset_size"]) == meta["ss_num_train_images"]
    assert info["sshs_model_hash"] == meta["sshs_model_hash"] == file_model_hash(result.adapter)
    assert info["trigger_words"] == ["sks"] and side["activation text"] == "sks" and side["sd version"] == "SD1"
    tags = {t["tag"]: t["count"] for t in info["top_tags"]}
    freq = json.loads(meta["ss_tag_frequency"])
    assert tags == {t: c for folder in freq.values() for t, c in folder.items()}
    assert str(info["training"]["learning_rate"]) == meta["ss_learning_rate"]
    assert info["training"]["lr_scheduler"] == meta["ss_lr_scheduler"]
    assert info["size"] == os.path.getsize(result.adapter) and info["preview"] == "mylora.preview.png"
    assert info["project"] == "heroes" and info["published_by"] and info["created"]
    import hashlib
    assert info["sha256"] == hashlib.sha256((shared / "mylora.safetensors").read_bytes()).hexdigest()


def test_publish_fills_metadata_a_bare_file_lacks(tmp_path, shared):
    """A file with no ss_* metadata (e.g. from an older trainer) is published with the run's."""
    from loradeck.trainer.lora.file_format import save_kohya_lora
    from tests.publish.tiny_models import make_lora_tensors

    tensors, _, _ = make_lora_tensors()
    bare = tmp_path / "bare.safetensors"
    save_kohya_lora(bare, tensors, {})
    result = publish_adapter(bare, shared, "bare", fill_metadata={"ss_network_dim": "4", "ss_output_name": "bare",
                                                                  "sshs_model_hash": "wrong"})
    _, meta = read_header(result.adapter)
    assert meta["ss_network_dim"] == "4"
    assert meta["sshs_model_hash"] == file_model_hash(bare)  # the file's own value wins over a fill


def test_existing_name_is_refused_and_left_untouched(project, lora_bytes, tiny_base, shared):
    make_run(project, lora_bytes, base_model=str(tiny_base))
    (shared / "mylora.safetensors").write_bytes(b"a teammate's adapter")
    before = snapshot(shared)
    proc = run_cli("export", "heroes", "--to", str(shared), "--no-load-check", root=project.root)
    assert proc.returncode == 1 and "already exists" in proc.stderr and "--on-conflict version" in proc.stderr
    assert snapshot(shared) == before


def test_versioning_publishes_name_v2_then_v3(lora_path, shared):
    first = publish_adapter(lora_path, shared, "hero", on_conflict="version")
    second = publish_adapter(lora_path, shared, "hero", on_conflict="version")
    third = publish_adapter(lora_path, shared, "hero-v2", on_conflict="version")
    assert (first.name, second.name, third.name) == ("hero", "hero-v2", "hero-v3")
    assert second.versioned and not first.versioned
    assert json.loads((shared / "hero-v2.json").read_text())["loradeck"]["name"] == "hero-v2"
    with pytest.raises(PublishError, match="already exists"):
        publish_adapter(lora_path, shared, "hero", on_conflict="refuse")


def test_published_files_are_group_readable_under_a_strict_umask(lora_path, shared, tmp_path):
    preview = tmp_path / "p.png"
    preview.write_bytes(b"\x89PNG fake")
    old = os.umask(0o077)
    try:
        result = publish_adapter(lora_path, shared, "strict", preview=preview)
    finally:
        os.umask(old)
    for path in (result.adapter, result.sidecar, result.preview):
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode & stat.S_IRGRP, oct(mode)


class _FailingFile:
    """A file object whose writes fail once `budget` bytes were written (a disk that fills up)."""

    def __init__(self, fh, budget):
        self.fh, self.budget = fh, budget

    def write(self, data):
        if len(data) > self.budget:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def _fail_nth(monkeypatch, name, n, exc):
    real = getattr(os, name)
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)


FAILURES = {
    "disk-full-in-adapter": lambda mp: mp.setattr(os, "fdopen", _wrap_fdopen(1, 4096)),
    "disk-full-in-preview": lambda mp: mp.setattr(os, "fdopen", _wrap_fdopen(2, 10)),
    "disk-full-in-sidecar": lambda mp: mp.setattr(os, "fdopen", _wrap_fdopen(3, 10)),
    "fsync-enospc": lambda mp: _fail_nth(mp, "fsync", 1, OSError(errno.ENOSPC, "No space left on device")),
    "link-eio": lambda mp: _fail_nth(mp, "link", 1, OSError(errno.EIO, "Input/output error")),
    "sidecar-rename-fails": lambda mp: _fail_nth(mp, "replace", 1, OSError(errno.EIO, "Input/output error")),
    "preview-rename-fails": lambda mp: _fail_nth(mp, "replace", 2, OSError(errno.EIO, "Input/output error")),
    "interrupted": lambda mp: _fail_nth(mp, "fsync", 2, KeyboardInterrupt()),
}


def _wrap_fdopen(which, budget):
    real = os.fdopen
    calls = {"n": 0}

    def fake(fd, *args, **kwargs):
        fh = real(fd, *args, **kwargs)
        calls["n"] += 1
        return _FailingFile(fh, budget) if calls["n"] == which else fh

    return fake


@pytest.mark.parametrize("failure", list(FAILURES))
def test_injected_failures_leave_the_destination_as_it_was(lora_path, shared, tmp_path, monkeypatch, failure):
    (shared / "other.safetensors").write_bytes(b"someone else's adapter")
    (shared / "other.json").write_text("{}")
    preview = tmp_path / "p.png"
    preview.write_bytes(b"\x89PNG preview")
    before = snapshot(shared)
    src_before = lora_path.read_bytes()
    FAILURES[failure](monkeypatch)
    with pytest.raises((PublishError, KeyboardInterrupt)) as info:
        publish_adapter(lora_path, shared, "mylora", preview=preview)
    monkeypatch.undo()
    assert snapshot(shared) == before, "debris or damage left in the destination"
    assert lora_path.read_bytes() == src_before
    if "disk-full" in failure or failure == "fsync-enospc":
        assert "destination is full" in str(info.value) and "nothing was published" in str(info.value)
    # and the folder still takes a publish afterwards
    publish_adapter(lora_path, shared, "mylora", preview=preview)
    assert check_rules(shared / "mylora.safetensors").ok


CRASH_SCRIPT = """
import os, sys
from loradeck.trainer.lora.publish import publish_adapter
point, src, dest, preview = sys.argv[1:]
real = {"fsync": os.fsync, "link": os.link, "replace": os.replace}
def crash_on(name, nth):
    calls = [0]
    def fake(*a, **k):
        calls[0] += 1
        if calls[0] == nth:
            os._exit(9)          # power cut: no cleanup code runs
        return real[name](*a, **k)
    setattr(os, name, fake)
name, nth = point.split(":")
crash_on(name, int(nth))
publish_adapter(src, dest, "mylora", preview=preview)
"""


@pytest.mark.parametrize("point", ["fsync:1", "fsync:2", "link:1", "replace:1", "replace:2"])
def test_a_crash_at_any_point_leaves_nothing_that_looks_like_a_broken_adapter(lora_path, shared, tmp_path, point):
    preview = tmp_path / "p.png"
    preview.write_bytes(b"\x89PNG preview")
    proc = subprocess.run([sys.executable, "-c", CRASH_SCRIPT, point, str(lora_path), str(shared), str(preview)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    visible = [p for p in shared.iterdir() if not p.name.startswith(".")]
    for p in visible:
        if p.suffix == ".safetensors":
            assert check_rules(p).ok  # a visible adapter is always a complete, valid one
    assert all(p.name.startswith(".loradeck-tmp-") and p.name.endswith(".part")
               for p in shared.iterdir() if p.name.startswith("."))
    assert [a.name for a in list_adapters(shared)] in ([], ["mylora"])
    # temporaries are swept once they are clearly abandoned, never while fresh
    hidden = [p for p in shared.iterdir() if p.name.startswith(".")]
    assert sweep_stale_temporaries(shared) == 0
    old = time.time() - 7200
    for p in hidden:
        os.utime(p, (old, old))
    assert sweep_stale_temporaries(shared) == len(hidden)


def test_an_invalid_run_output_is_not_published(project, lora_bytes, tiny_base, shared, tmp_path):
    from loradeck.trainer.lora.file_format import read_lora, save_kohya_lora

    run_dir = make_run(project, lora_bytes, base_model=str(tiny_base))
    out = run_dir / "mylora.safetensors"
    tensors, meta = read_lora(out)
    for k in tensors:
        if k.endswith(".lora_up.weight"):
            tensors[k].zero_()
    save_kohya_lora(out, tensors, {k: v for k, v in meta.items() if not k.startswith("sshs_")})
    proc = run_cli("export", "heroes", "--to", str(shared), root=project.root)
    assert proc.returncode == 1 and "not a valid LoRA" in proc.stderr
    assert list(shared.iterdir()) == []


def test_export_picks_the_newest_run_with_a_final_lora(project, lora_bytes, tiny_base, shared):
    good = make_run(project, lora_bytes, base_model=str(tiny_base), run_id="20261126-080000-aaaa")
    failed = project.runs / "20261126-090000-bbbb"
    failed.mkdir(parents=True)
    (failed / "config.toml").write_text((good / "config.toml").read_text())
    result = export_run("heroes", root=project.root, to=shared, load_check=False)
    assert result.run == good.name
    with pytest.raises(LoradeckError, match="no final LoRA"):
        export_run("heroes", failed.name, root=project.root, to=shared, load_check=False)


def test_export_without_samples_has_no_preview(project, lora_bytes, tiny_base, shared):
    run_dir = make_run(project, lora_bytes, base_model=str(tiny_base), samples=False)
    assert latest_sample(run_dir) is None
    result = export_run("heroes", root=project.root, to=shared, name="nopreview", load_check=False)
    assert result.preview is None and not (shared / "nopreview.preview.png").exists()
    assert json.loads((shared / "nopreview.json").read_text())["loradeck"]["preview"] is None


def test_destination_comes_from_flag_then_project_then_user_config(project, tmp_path, monkeypatch):
    from loradeck.trainer.config import project_settings as settings_mod
    from loradeck.trainer.config.user_config import load_user_config

    flag, proj, user = (tmp_path / n for n in ("flag", "proj", "user"))
    for d in (flag, proj, user):
        d.mkdir()
    cfg = tmp_path / "xdg" / "loradeck" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'[export]\ndest = "{user}"\n')
    settings = settings_mod.load(project.settings_file)
    assert resolve_destination(None, settings=settings, user=load_user_config()).path == user
    settings = settings_mod.update(project.settings_file, "export", {"dest": str(proj)})
    assert resolve_destination(None, settings=settings).source == "project"
    assert resolve_destination(str(flag), settings=settings).path == flag
    cfg.unlink()
    settings = settings_mod.update(project.settings_file, "export", {"dest": ""})
    with pytest.raises(PublishError, match="no destination") as info:
        resolve_destination(None, settings=settings)
    assert "config.toml" in info.value.hint
    with pytest.raises(PublishError, match="does not exist"):
        resolve_destination(str(tmp_path / "unmounted"))


def test_export_uses_the_project_destination_and_on_conflict(project, lora_bytes, tiny_base, shared):
    from loradeck.trainer.config import project_settings as settings_mod

    make_run(project, lora_bytes, base_model=str(tiny_base))
    settings_mod.update(project.settings_file, "export", {"dest": str(shared), "on_conflict": "version"})
    assert export_run("heroes", root=project.root, load_check=False).name == "mylora"
    assert export_run("heroes", root=project.root, load_check=False).name == "mylora-v2"


@pytest.mark.parametrize("bad", ["", "../x", ".hidden", "a/b", "x.safetensors"])
def test_bad_published_names_are_refused(lora_path, shared, bad):
    with pytest.raises(PublishError):
        publish_adapter(lora_path, shared, bad)
    assert list(shared.iterdir()) == []


def test_publishing_modules_stay_free_of_torch():
    code = ("import sys; import loradeck.trainer.lora.publish, loradeck.trainer.lora.shared_folder, loradeck.trainer.lora.packs, loradeck.trainer.lora.validate,"
            " loradeck.trainer.lora.convert, loradeck.trainer.cli.cmd_export, loradeck.trainer.config.user_config;"
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'peft', 'textual') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_exporting_a_stopped_run_suggests_resuming_it(project, lora_bytes, tiny_base, shared):
    good = make_run(project, lora_bytes, base_model=str(tiny_base), run_id="20261126-080000-aaaa")
    stopped = project.runs / "20261126-090000-cccc"
    stopped.mkdir(parents=True)
    (stopped / "config.toml").write_text((good / "config.toml").read_text())
    (stopped / "events.jsonl").write_text(
        json.dumps({"type": "run_started", "time": 1.0, "run_id": stopped.name, "config": {}, "environment": {}})
        + "\n" + json.dumps({"type": "run_finished", "time": 2.0, "status": "stopped"}) + "\n")
    with pytest.raises(LoradeckError, match="no final LoRA") as err:
        export_run("heroes", stopped.name, root=project.root, to=shared, load_check=False)
    assert f"it is stopped: resume it with `loradeck resume heroes {stopped.name}`" in err.value.one_line()


def test_a_checkpoint_of_a_stopped_run_is_exported_with_its_own_step_and_preview(project, lora_bytes, tiny_base,
                                                                                 shared):
    """kohya-style: pick the best intermediate file; a stopped run's checkpoints count too."""
    run_dir = make_run(project, lora_bytes, base_model=str(tiny_base))
    (run_dir / "mylora.safetensors").unlink()  # stopped before its final export
    (run_dir / "checkpoints").mkdir()
    for step in (50, 100):
        (run_dir / "checkpoints" / f"mylora-step{step:08d}.safetensors").write_bytes(lora_bytes)
    (run_dir / "checkpoints" / "mylora-step00000075.safetensors.tmp-x").write_bytes(b"partial")  # not one

    result = export_run("heroes", root=project.root, to=shared, load_check=False, checkpoint="50")
    assert (result.name, result.step, result.run) == ("mylora-step50", 50, run_dir.name)
    assert check_rules(shared / "mylora-step50.safetensors").ok
    # its preview is the sample made at step 50, not the run's later one
    assert (shared / "mylora-step50.preview.png").read_bytes() == \
        (run_dir / "samples" / "step-000050-0.png").read_bytes()
    assert export_run("heroes", run_dir.name, root=project.root, to=shared, load_check=False,
                      checkpoint="latest").name == "mylora-step100"
    with pytest.raises(LoradeckError, match="no checkpoint at step 75") as err:
        export_run("heroes", root=project.root, to=shared, load_check=False, checkpoint=75)
    assert "it has steps 50, 100" in err.value.one_line()
    with pytest.raises(LoradeckError, match="step number or 'latest'"):
        export_run("heroes", root=project.root, to=shared, load_check=False, checkpoint="best")
    with pytest.raises(LoradeckError, match="no final LoRA"):  # without --checkpoint nothing changed
        export_run("heroes", run_dir.name, root=project.root, to=shared, load_check=False)


def test_cli_exports_the_latest_checkpoint(project, lora_bytes, tiny_base, shared):
    plain = make_run(project, lora_bytes, base_model=str(tiny_base), run_id="20261126-080000-aaaa")
    proc = run_cli("export", "heroes", "--checkpoint", "latest", "--to", str(shared), "--no-load-check",
                   root=project.root)
    assert proc.returncode == 1 and "no run with checkpoints" in proc.stderr
    assert "--save-every-steps" in proc.stderr
    (plain / "checkpoints").mkdir()
    (plain / "checkpoints" / "mylora-step00000040.safetensors").write_bytes(lora_bytes)
    proc = run_cli("export", "heroes", "--checkpoint", "latest", "--to", str(shared), "--no-load-check",
                   root=project.root)
    assert proc.returncode == 0, proc.stderr
    assert f"run {plain.name} checkpoint at step 40" in proc.stdout
    assert file_model_hash(shared / "mylora-step40.safetensors") == \
        file_model_hash(plain / "checkpoints" / "mylora-step00000040.safetensors")
