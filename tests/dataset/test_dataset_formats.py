"""Datasets as people have them: Hugging Face imagefolders and kohya dataset TOMLs imported in one step
with their captions and repeats, and written back out by `captions export --format`."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.dataset import caption_store, repeat_folders
from loradeck.trainer.dataset.export import export_dataset
from loradeck.trainer.dataset.formats import import_sources
from loradeck.trainer.dataset.importer import load_index
from loradeck.trainer.dataset.project import create_project
from loradeck.trainer.errors import ConfigError
from tests.conftest import REPO
from tests.dataset.conftest import noise, sha


def _images(folder: Path, names: list[str], seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, name in enumerate(names):
        path = folder / name
        noise(24 + i, 20, seed=seed + i).save(path)
        out.append(path)
    return out


def _caption(project, stem: str) -> str | None:
    return caption_store.read_caption(project.dataset / f"{stem}.png", settings_mod.load(
        project.settings_file).caption_extension)


def _cli(*args, root):
    import os

    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "loradeck.trainer", *args, "--root", str(root)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)


# --- Hugging Face imagefolder -----------------------------------------------------------------------

def test_imagefolder_jsonl_imports_images_with_their_text_column(root, tmp_path):
    folder = tmp_path / "hf"
    _images(folder, ["a.png", "b.png"])
    _images(folder / "more", ["c.png"], seed=5)
    (folder / "b.txt").write_text("a sidecar the metadata overrides")
    (folder / "metadata.jsonl").write_text(
        json.dumps({"file_name": "a.png", "text": "a red fox"}) + "\n"
        + json.dumps({"file_name": "b.png", "text": "a blue bird", "other": 1}) + "\n"
        + json.dumps({"file_name": "more/c.png", "text": "a green frog"}) + "\n"
        + json.dumps({"file_name": "gone.png", "text": "missing"}) + "\n")
    project = create_project("hf", root)
    report = import_sources(project, [folder])
    assert sorted(report.imported) == ["a.png", "b.png", "c.png"]
    assert (_caption(project, "a"), _caption(project, "b"), _caption(project, "c")) == \
        ("a red fox", "a blue bird", "a green frog")
    assert [why for _src, why in report.refused] == ["listed in metadata.jsonl but not there"]
    assert (project.originals / "a.png").read_bytes() == (folder / "a.png").read_bytes()


def test_imagefolder_csv_column_is_guessed_or_chosen_by_flag(root, tmp_path):
    folder = tmp_path / "csv"
    _images(folder, ["x.png", "y.png"])
    (folder / "metadata.csv").write_text('file_name,prompt,caption\nx.png,"1girl, smile",a girl\n'
                                         'y.png,"1boy",a boy\n')
    guessed = create_project("guessed", root)
    import_sources(guessed, [folder])
    assert _caption(guessed, "x") == "a girl"  # caption comes before prompt in the guess order
    chosen = create_project("chosen", root)
    import_sources(chosen, [folder], caption_column="prompt")
    assert (_caption(chosen, "x"), _caption(chosen, "y")) == ("1girl, smile", "1boy")
    with pytest.raises(ConfigError, match=r"has no column 'tags' \(columns: file_name, prompt, caption\)"):
        import_sources(create_project("bad", root), [folder], caption_column="tags")


def test_imagefolder_without_a_caption_column_is_refused_naming_the_columns(root, tmp_path):
    folder = tmp_path / "nocol"
    _images(folder, ["x.png"])
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "x.png", "label": 3}) + "\n")
    project = create_project("nocol", root)
    with pytest.raises(ConfigError, match="no caption column found among file_name, label"):
        import_sources(project, [folder])
    assert not list(project.originals.iterdir())


def test_seed_bench_data_and_its_metadata_jsonl_import_with_captions_in_one_command(root, tmp_path):
    """The seed's dataset step (/work/shared/bench/make_data.py): images with .txt captions, and the same
    set described by a metadata.jsonl, each import as-is with `loradeck import`."""
    spec = importlib.util.spec_from_file_location("make_data", Path(REPO).parent.parent / "shared/bench/make_data.py")
    if spec is None or not Path(spec.origin).is_file():  # outside this workspace: the same output, made here
        def make(out, n):
            for i in range(n):
                noise(40, 40, seed=i).save(out / f"img_{i:04d}{'.jpg' if i % 2 else '.png'}")
                (out / f"img_{i:04d}.txt").write_text(f"testsubject, style {i % 3}, circles")
    else:
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        make = module.make
    sidecars = tmp_path / "data"
    sidecars.mkdir()
    make(sidecars, 6)
    _cli("init", "seed", root=root)
    proc = _cli("import", "seed", str(sidecars), "--json", root=root)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["captions_imported"]) == 6

    meta = tmp_path / "meta"
    meta.mkdir()
    rows = []
    for i, path in enumerate(sorted(p for p in sidecars.iterdir() if p.suffix != ".txt")):
        (meta / path.name).write_bytes(path.read_bytes())
        rows.append({"file_name": path.name, "text": path.with_suffix(".txt").read_text()})
    (meta / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _cli("init", "seedmeta", root=root)
    proc = _cli("import", "seedmeta", str(meta), "--json", root=root)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert len(out["imported"]) == 6 and len(out["captions_imported"]) == 6
    text = (root / "seedmeta" / "dataset" / "img_0004.txt").read_text().strip()
    assert text == "testsubject, style 1, circles"


# --- kohya dataset config ---------------------------------------------------------------------------

def _kohya_tree(tmp_path: Path) -> Path:
    _images(tmp_path / "chars", ["c1.png", "c2.png"])
    (tmp_path / "chars" / "c1.caption").write_text("zxq, red dress")
    (tmp_path / "chars" / "c2.txt").write_text("a .txt the config does not read")
    _images(tmp_path / "style", ["s1.png"], seed=7)
    (tmp_path / "style" / "s1.txt").write_text("painted, sky")
    toml = tmp_path / "dataset.toml"
    toml.write_text("""
[general]
shuffle_caption = true
keep_tokens = 1
enable_bucket = true
flip_aug = false

[[datasets]]
resolution = [768, 768]
batch_size = 2
min_bucket_reso = 320
max_bucket_reso = 1280
bucket_reso_steps = 64

  [[datasets.subsets]]
  image_dir = 'chars'
  num_repeats = 10
  class_tokens = 'zxq woman'

  [[datasets.subsets]]
  image_dir = 'style'
  num_repeats = 3
  caption_extension = '.txt'
""")
    return toml


def test_kohya_dataset_toml_imports_captions_repeats_and_project_settings(root, tmp_path):
    project = create_project("kohya", root)
    report = import_sources(project, [_kohya_tree(tmp_path)])
    assert sorted(report.imported) == ["c1.png", "c2.png", "s1.png"]
    # .caption is kohya's default extension; an image without one gets class_tokens.
    assert (_caption(project, "c1"), _caption(project, "c2"), _caption(project, "s1")) == \
        ("zxq, red dress", "zxq woman", "painted, sky")
    assert repeat_folders.image_repeats(project) == {"c1": 10, "c2": 10, "s1": 3}
    cfg = settings_mod.load(project.settings_file)
    assert (cfg.prep.resolution, cfg.prep.bucket_min_side, cfg.prep.bucket_max_side) == (768, 320, 1280)
    assert cfg.train == {"batch_size": 2, "keep_tokens": 1, "shuffle_caption": True}
    assert any("num_repeats" not in n and "10 repeat(s)" in n for n in report.notes)


def test_kohya_unknown_and_unsupported_keys_are_refused_all_listed_and_nothing_imported(root, tmp_path):
    _images(tmp_path / "imgs", ["a.png"])
    toml = tmp_path / "bad.toml"
    toml.write_text("""
[general]
shuffle_captions = true
[[datasets]]
resolution = 512
  [[datasets.subsets]]
  image_dir = 'imgs'
  flip_aug = true
  num_repeat = 2
""")
    project = create_project("bad", root)
    with pytest.raises(ConfigError) as e:
        import_sources(project, [toml])
    message = str(e.value)
    assert "unknown key(s) in [general]: shuffle_captions" in message
    assert "unknown key(s) in [[datasets]] #1 [[datasets.subsets]] #1: num_repeat" in message
    assert "flip_aug = True in [[datasets]] #1 [[datasets.subsets]] #1 is not supported" in message
    assert not list(project.originals.iterdir())


def test_kohya_project_wide_value_that_differs_between_subsets_is_refused(root, tmp_path):
    _images(tmp_path / "a", ["a.png"])
    _images(tmp_path / "b", ["b.png"], seed=3)
    toml = tmp_path / "d.toml"
    toml.write_text("[[datasets]]\n[[datasets.subsets]]\nimage_dir = 'a'\nkeep_tokens = 1\n"
                    "[[datasets.subsets]]\nimage_dir = 'b'\nkeep_tokens = 2\n")
    with pytest.raises(ConfigError, match="keep_tokens differs between subsets"):
        import_sources(create_project("d", root), [toml])


def test_kohya_cli_imports_in_one_command(root, tmp_path):
    toml = _kohya_tree(tmp_path)
    assert _cli("init", "k", root=root).returncode == 0
    proc = _cli("import", "k", str(toml), root=root)
    assert proc.returncode == 0, proc.stderr
    assert "its images are seen 10 times per epoch" in proc.stdout
    assert "3 file(s)" in proc.stdout and "3 caption(s)" in proc.stdout and "\nrefused " not in proc.stdout


# --- export and round trips -------------------------------------------------------------------------

def test_export_imagefolder_round_trips_through_import(root, tmp_path):
    folder = tmp_path / "hf"
    _images(folder, ["a.png", "b.png", "c.png"])
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "text": "one"}) + "\n"
                                           + json.dumps({"file_name": "b.png", "text": "two"}) + "\n")
    first = create_project("first", root)
    import_sources(first, [folder])
    out = tmp_path / "out"
    proc = _cli("captions", "export", "first", "--format", "imagefolder", "--to", str(out), "--json", root=root)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["captioned"] == 2
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert rows == [{"file_name": "a.png", "text": "one"}, {"file_name": "b.png", "text": "two"},
                    {"file_name": "c.png", "text": ""}]
    assert sha(out / "a.png") == sha(folder / "a.png")
    second = create_project("second", root)
    import_sources(second, [out])
    assert (_caption(second, "a"), _caption(second, "b"), _caption(second, "c")) == ("one", "two", None)


def test_export_kohya_keeps_repeats_and_its_toml_imports_back_the_same(root, tmp_path):
    first = create_project("first", root, trigger_word="zxq woman")
    import_sources(first, [_kohya_tree(tmp_path / "src")])
    out = tmp_path / "kohya"
    summary = export_dataset(first, out, "kohya")
    assert summary["folders"] == {"3_zxq_woman": {"repeats": 3, "images": 1},
                                  "10_zxq_woman": {"repeats": 10, "images": 2}}
    assert (out / "10_zxq_woman" / "c1.txt").read_text().strip() == "zxq, red dress"
    second = create_project("second", root)
    import_sources(second, [out / "dataset.toml"])
    assert repeat_folders.image_repeats(second) == repeat_folders.image_repeats(first)
    assert {s: _caption(second, s) for s in ("c1", "c2", "s1")} == {s: _caption(first, s) for s in ("c1", "c2", "s1")}
    assert settings_mod.load(second.settings_file).train == settings_mod.load(first.settings_file).train


def test_export_refuses_a_folder_with_files_in_it(root, tmp_path):
    project = create_project("p", root)
    import_sources(project, [_images(tmp_path / "i", ["a.png"])[0]])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    proc = _cli("captions", "export", "p", "--format", "kohya", "--to", str(tmp_path / "full"), root=root)
    assert proc.returncode == 1 and "exists and is not an empty folder" in proc.stderr
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    assert load_index(project)
