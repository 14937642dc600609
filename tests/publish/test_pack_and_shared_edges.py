"""The edges of `pack create` and `shared` (item 12.12): weights have sane bounds, the hint names
the flag the command really has, and a dry run says what it would do."""

from __future__ import annotations

import pytest

from loradeck.trainer.lora.packs import MAX_WEIGHT, MIN_WEIGHT, PackError, create_pack, parse_adapter_spec
from loradeck.trainer.lora.publish import publish_adapter
from tests.conftest import run_cli
from tests.publish.tiny_models import write_lora


@pytest.fixture
def published(tmp_path, shared):
    lora = tmp_path / "a.safetensors"
    write_lora(lora, seed=1, trigger="aaa", precision="fp32")
    publish_adapter(lora, shared, "style-a", who="maya")
    return shared


@pytest.mark.parametrize("spec", ["lora=1e9", "lora=-3", "lora=2.5", "lora=nan"])
def test_an_absurd_pack_weight_is_refused_and_the_bounds_are_said(spec):
    with pytest.raises(PackError) as refused:
        parse_adapter_spec(spec)
    if "nan" not in spec:
        assert f"outside {MIN_WEIGHT:g} to {MAX_WEIGHT:g}" in str(refused.value)


def test_weights_inside_the_bounds_are_kept():
    assert parse_adapter_spec("a=-2") == ("a", -2.0) and parse_adapter_spec("a=2") == ("a", 2.0)
    assert parse_adapter_spec("a=0.7") == ("a", 0.7)


def test_cli_pack_create_refuses_a_huge_weight_and_writes_nothing(published):
    proc = run_cli("pack", "create", "p", "style-a=1e9", "--to", str(published))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "outside -2 to 2" in proc.stderr
    assert not (published / "p.pack.json").exists()
    with pytest.raises(PackError, match="outside"):  # the engine refuses it too, not only the parser
        create_pack(published, "p", [("style-a", 1e9)])


def test_shared_list_without_a_folder_names_its_own_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty-config"))
    proc = run_cli("shared", "list")
    assert proc.returncode == 1 and "pass --dir DIR" in proc.stderr and "--to" not in proc.stderr


def test_shared_import_dry_run_says_would_import_and_changes_nothing(published, root):
    from loradeck.trainer.dataset.project import create_project

    project = create_project("qa cats", root)
    before = project.settings_file.read_text()
    proc = run_cli("shared", "import", "style-a", "qa cats", "--dir", str(published), "--dry-run", root=root)
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("would import style-a into qa cats") and "imported" not in proc.stdout
    assert project.settings_file.read_text() == before
