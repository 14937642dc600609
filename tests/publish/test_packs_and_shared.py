"""Packs load together in diffusers with their weights; the shared folder lists and imports adapters."""

from __future__ import annotations

import json
import os

import pytest
import torch

from loradeck.trainer.errors import ConfigError, LoradeckError
from loradeck.trainer.lora.packs import apply_pack, create_pack, parse_adapter_spec, read_pack
from loradeck.trainer.lora.publish import publish_adapter
from loradeck.trainer.lora.shared_folder import import_into_project, list_adapters, train_settings_of
from tests.conftest import run_cli
from tests.publish.tiny_models import ATTENTION_TARGETS, KOHYA_TARGETS, tiny_pipeline, unet_output, write_lora


@pytest.fixture
def two_published(tmp_path, shared):
    """Two different adapters published in the shared folder (one with a preview)."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_lora(a, targets=ATTENTION_TARGETS, seed=1, trigger="aaa", precision="fp32")
    write_lora(b, targets=KOHYA_TARGETS, seed=5, trigger="bbb", precision="fp32")
    preview = tmp_path / "p.png"
    preview.write_bytes(b"\x89PNG a")
    publish_adapter(a, shared, "style-a", preview=preview, who="maya")
    publish_adapter(b, shared, "char-b", who="li")
    return shared


def test_parse_adapter_spec():
    assert parse_adapter_spec("hero") == ("hero", 1.0)
    assert parse_adapter_spec("hero=0.6") == ("hero", 0.6)
    assert parse_adapter_spec("hero.safetensors:-0.5") == ("hero", -0.5)
    with pytest.raises(LoradeckError):
        parse_adapter_spec("hero=lots")


def test_pack_adapters_load_together_in_diffusers_with_their_weights(two_published, tmp_path):
    out = create_pack(two_published, "mix", [("style-a", 0.7), ("char-b", 0.4)], description="style + character")
    pack = out["path"]
    pipe = tiny_pipeline(tmp_path / "p1")
    base = unet_output(pipe.unet)
    loaded = apply_pack(pipe, pack)
    assert loaded == [("style_a", 0.7), ("char_b", 0.4)]
    assert sorted(pipe.get_active_adapters()) == ["char_b", "style_a"]
    # each layer's scale is weight * alpha / rank (alpha 2, rank 4)
    to_q = pipe.unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    assert to_q.scaling["style_a"] == pytest.approx(0.7 * 0.5) and to_q.scaling["char_b"] == pytest.approx(0.4 * 0.5)
    mixed = unet_output(pipe.unet)
    assert (mixed - base).abs().max() > 1e-3
    # the mix differs from either adapter alone, and weight 0 for one gives the other alone
    pipe.set_adapters(["style_a", "char_b"], adapter_weights=[0.7, 0.0])
    only_a = unet_output(pipe.unet)
    assert (mixed - only_a).abs().max() > 1e-4
    single = tiny_pipeline(tmp_path / "p2")
    single.load_lora_weights(str(two_published / "style-a.safetensors"), adapter_name="a")
    single.set_adapters(["a"], adapter_weights=[0.7])
    assert torch.allclose(unet_output(single.unet), only_a, atol=1e-5)


def test_pack_file_lists_adapters_hashes_and_preview(two_published):
    out = create_pack(two_published, "mix", [("char-b", 1.0), ("style-a", 0.5)])
    doc = json.loads(open(out["path"]).read())
    assert doc["loradeck_pack"] == 1 and doc["base_model_version"] == "sd_v1"
    assert [(a["file"], a["weight"]) for a in doc["adapters"]] == [("char-b.safetensors", 1.0),
                                                                   ("style-a.safetensors", 0.5)]
    assert doc["preview"] == "style-a.preview.png"  # the first adapter that has one
    assert doc["activation_text"] == "bbb, aaa"
    assert read_pack(out["path"])["name"] == "mix"


def test_pack_refuses_missing_adapters_and_detects_changed_ones(two_published, tmp_path):
    with pytest.raises(LoradeckError, match="no adapter 'ghost'"):
        create_pack(two_published, "bad", [("ghost", 1.0)])
    out = create_pack(two_published, "mix", [("style-a", 1.0)])
    with pytest.raises(LoradeckError, match="already exists"):
        create_pack(two_published, "mix", [("style-a", 1.0)])
    assert create_pack(two_published, "mix", [("style-a", 1.0)], on_conflict="version")["pack"]["name"] == "mix-v2"
    other = tmp_path / "other.safetensors"
    write_lora(other, seed=9)
    (two_published / "style-a.safetensors").write_bytes(other.read_bytes())
    with pytest.raises(LoradeckError, match="changed since the pack was made"):
        read_pack(out["path"])


def test_cli_pack_create_and_show(two_published, tmp_path):
    preview = tmp_path / "cover.png"
    preview.write_bytes(b"\x89PNG cover")
    proc = run_cli("pack", "create", "duo", "style-a=0.8", "char-b", "--to", str(two_published),
                   "--description", "a duo", "--preview", str(preview), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["pack"]["preview"] == "duo.pack.png"
    assert (two_published / "duo.pack.png").read_bytes() == preview.read_bytes()
    proc = run_cli("pack", "show", "duo", "--dir", str(two_published))
    assert proc.returncode == 0 and "style-a  weight 0.8" in proc.stdout and "a duo" in proc.stdout


def test_shared_list_shows_name_base_trigger_size_date_who(two_published, tmp_path):
    bare = tmp_path / "bare.safetensors"
    write_lora(bare, seed=3, trigger="ccc")
    (two_published / "foreign.safetensors").write_bytes(bare.read_bytes())  # copied in by hand, no sidecar
    (two_published / ".loradeck-tmp-abc.part").write_bytes(b"in progress")
    items = {a.name: a for a in list_adapters(two_published)}
    assert set(items) == {"style-a", "char-b", "foreign"}
    a = items["style-a"]
    assert (a.base_model, a.trigger, a.who, a.rank) == ("tiny-base", "aaa", "maya", 4)
    assert a.size == os.path.getsize(two_published / "style-a.safetensors") and a.date and a.has_sidecar
    assert a.preview == "style-a.preview.png"
    f = items["foreign"]  # from the header alone
    assert (f.trigger, f.base_model, f.has_sidecar) == ("ccc", "tiny-base", False) and f.who
    proc = run_cli("shared", "list", "--dir", str(two_published))
    assert proc.returncode == 0
    assert "NAME" in proc.stdout and "WHO" in proc.stdout and "maya" in proc.stdout and "char-b" in proc.stdout
    data = json.loads(run_cli("shared", "list", "--dir", str(two_published), "--json").stdout)
    assert {a["name"] for a in data["adapters"]} == {"style-a", "char-b", "foreign"}
    shown = json.loads(run_cli("shared", "show", "char-b", "--dir", str(two_published), "--json").stdout)
    assert shown["adapter"]["who"] == "li" and shown["sidecar"]["activation text"] == "bbb"
    proc = run_cli("shared", "show", "ghost", "--dir", str(two_published))
    assert proc.returncode == 1 and "no adapter 'ghost'" in proc.stderr


def test_import_brings_an_adapters_settings_into_a_project(two_published, root):
    from loradeck.trainer.config import project_settings as settings_mod
    from loradeck.trainer.dataset.project import create_project

    project = create_project("newproj", root)
    dry = import_into_project(project, two_published, "char-b", dry_run=True)
    assert dry["train"]["rank"] == 4 and dry["train"]["alpha"] == 2.0 and dry["project"]["trigger_word"] == "bbb"
    assert settings_mod.load(project.settings_file).train == {}
    proc = run_cli("shared", "import", "char-b", "newproj", "--dir", str(two_published), root=root)
    assert proc.returncode == 0, proc.stderr
    s = settings_mod.load(project.settings_file)
    assert s.train["rank"] == 4 and s.train["alpha"] == 2.0 and s.train["max_train_steps"] == 100
    assert s.project.trigger_word == "bbb" and s.project.base_model == "tiny-base"
    assert (project.state / "imports" / "char-b.json").is_file()


def test_settings_of_a_kohya_file_without_loradeck_config():
    meta = {"ss_network_dim": "32", "ss_network_alpha": "16.0", "ss_learning_rate": "0.0001",
            "ss_lr_scheduler": "cosine", "ss_resolution": "(768, 768)", "ss_seed": "1234",
            "ss_min_snr_gamma": "None", "ss_sd_model_name": "runwayml/stable-diffusion-v1-5"}
    assert train_settings_of(meta) == {"rank": 32, "alpha": 16.0, "learning_rate": 1e-4, "lr_scheduler": "cosine",
                                       "seed": 1234, "resolution": 768,
                                       "base_model": "runwayml/stable-diffusion-v1-5"}


def test_user_config_is_read_from_xdg_and_checked(tmp_path, monkeypatch):
    from loradeck.trainer.config.user_config import config_path, load_user_config

    path = config_path()
    assert path == tmp_path / "xdg" / "loradeck" / "config.toml"
    assert load_user_config().export_dest == ""
    path.parent.mkdir(parents=True)
    path.write_text('[user]\nname = "maya"\n[export]\ndest = "/mnt/team"\non_conflict = "version"\n')
    cfg = load_user_config()
    assert (cfg.who, cfg.export_dest, cfg.on_conflict) == ("maya", "/mnt/team", "version")
    path.write_text('[export]\ndestination = "/x"\n')
    with pytest.raises(ConfigError, match="destination"):
        load_user_config()
    path.write_text("not = [toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_user_config()


def test_a_read_only_shared_folder_can_be_listed_and_read_but_not_written(two_published, monkeypatch, capsys):
    """A teammate's share mounted read-only: list/show/pack show work; pack create refuses clearly."""
    from loradeck.trainer.cli import main as cli_main

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False if mode & os.W_OK and
                        str(path) == str(two_published) else real_access(path, mode, *a, **k))
    assert cli_main(["shared", "list", "--dir", str(two_published), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["ok"] and {a["name"] for a in listed["adapters"]} >= {"style-a", "char-b"}
    assert cli_main(["shared", "show", "char-b", "--dir", str(two_published)]) == 0
    assert cli_main(["pack", "create", "duo", "style-a", "--to", str(two_published)]) == 1
    assert "is not writable by you" in capsys.readouterr().err
    assert not (two_published / "duo.pack.json").exists()


def test_a_missing_shared_folder_names_the_option_it_came_from(tmp_path):
    proc = run_cli("shared", "list", "--dir", str(tmp_path / "unmounted"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "(from --dir)" in proc.stderr
