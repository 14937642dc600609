"""Import: byte-identical originals, one-line refusals, duplicates, name clashes, sidecar captions."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from loradeck.trainer.dataset import image_probe
from loradeck.trainer.dataset.importer import clean_stem, import_paths, load_index
from tests.dataset.conftest import BAD, GOOD, noise, sha


def _by_source(pairs, folder: Path) -> dict[str, str]:
    return {Path(src).relative_to(folder).as_posix(): other for src, other in pairs}


def test_mixed_folder_imports_good_files_and_refuses_bad_ones_with_reasons(project, mixed):
    folder = mixed["portrait.jpg"].parent
    before = {name: sha(p) for name, p in mixed.items()}
    report = import_paths(project, [folder])

    refused = _by_source(report.refused, folder)
    assert set(refused) == BAD
    assert "truncated" in refused["truncated.jpg"]
    assert refused["empty.png"] == "empty file"
    assert refused["notes.png"].startswith("not an image")
    assert refused["readme.md"].startswith("not an image")
    assert "absurd dimensions" in refused["bomb.png"]
    assert all("\n" not in why for why in refused.values())

    assert len(report.imported) == len(GOOD)
    assert _by_source(report.duplicates, folder) == {"dup_two.png": "dup_one.png"}
    # Every original is byte-identical to its source, and the sources are untouched.
    index = load_index(project)
    assert len(index) == len(GOOD)
    for digest, entry in index.items():
        assert sha(project.originals / entry["file"]) == digest
    assert {name: sha(p) for name, p in mixed.items()} == before
    assert {sha(project.originals / n) for n in report.imported} == {sha(mixed[n]) for n in GOOD}


def test_same_stem_clashes_get_unique_stems_and_unicode_names_survive(project, mixed):
    folder = mixed["portrait.jpg"].parent
    report = import_paths(project, [folder])
    names = set(report.imported)
    assert {"café_猫.png", "фото.jpg", "portrait.jpg"} <= names
    cats = sorted(n for n in names if n.startswith("cat"))
    assert cats == ["cat-2.png", "cat-3.png", "cat.jpg"]
    stems = [Path(n).stem.casefold() for n in names]
    assert len(stems) == len(set(stems)), "stems must be unique per project"
    renamed = _by_source(report.renamed, folder)
    assert renamed == {"a/cat.png": "cat-2.png", "b/cat.png": "cat-3.png", "palette.png": "palette-2.png"}


def test_sidecar_txt_and_kohya_caption_files_land_in_dataset_with_the_project_extension(project, mixed):
    folder = mixed["portrait.jpg"].parent
    report = import_paths(project, [folder])
    renamed = _by_source(report.renamed, folder)
    kohya_stem = Path(renamed["b/cat.png"]).stem
    assert (project.dataset / "portrait.txt").read_text(encoding="utf-8") == "a red and blue card, studio\n"
    assert (project.dataset / "фото.txt").read_text(encoding="utf-8") == "кошка, sitting\n"
    assert (project.dataset / f"{kohya_stem}.txt").read_text() == "a cat, kohya caption\n"
    assert sorted(report.captions_imported) == sorted(["portrait.txt", "фото.txt", f"{kohya_stem}.txt"])
    assert not list(project.dataset.glob("*.caption"))


def test_existing_caption_is_never_overwritten_and_the_report_says_so(project, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    noise(64, 64).save(src / "x.png")
    (src / "x.txt").write_text("first")
    import_paths(project, [src])
    (project.dataset / "x.txt").write_text("edited by the user\n")
    (src / "x.txt").write_text("second")
    report = import_paths(project, [src])
    assert report.duplicates and not report.imported
    assert (project.dataset / "x.txt").read_text() == "edited by the user\n"
    assert report.captions_skipped and "kept the existing caption" in report.captions_skipped[0][1]


def test_a_second_sidecar_with_other_text_is_reported_not_dropped_silently(project, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    noise(64, 64, seed=1).save(src / "both.png")
    (src / "both.txt").write_text("from the tagger")
    (src / "both.caption").write_text("from kohya")
    noise(64, 64, seed=2).save(src / "same.png")
    (src / "same.txt").write_text("one text")
    (src / "same.caption").write_text("one text\n")  # the same caption twice: nothing to report
    report = import_paths(project, [src])
    assert (project.dataset / "both.txt").read_text().strip() == "from the tagger"
    assert report.captions_skipped == [(str(src / "both.caption"),
                                        "not imported: both.txt beside it was used, and the two texts differ")]
    assert (src / "both.caption").read_text() == "from kohya"  # the original is untouched


def test_reimport_is_all_duplicates_and_a_new_caption_for_a_duplicate_is_picked_up(project, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    noise(64, 64).save(src / "y.png")
    assert import_paths(project, [src]).imported == ["y.png"]
    (src / "y.txt").write_text("captioned later")
    report = import_paths(project, [src])
    assert report.imported == [] and report.duplicates == [(str(src / "y.png"), "y.png")]
    assert report.captions_imported == ["y.txt"]


def test_index_follows_originals_removed_or_added_by_hand(project, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    noise(64, 64, seed=1).save(src / "a.png")
    import_paths(project, [src])
    (project.originals / "a.png").unlink()
    assert import_paths(project, [src]).imported == ["a.png"]  # no stale "duplicate"
    noise(64, 64, seed=2).save(project.originals / "manual.png")
    (src / "again.png").write_bytes((project.originals / "manual.png").read_bytes())
    assert import_paths(project, [src / "again.png"]).duplicates == [(str(src / "again.png"), "manual.png")]


def test_kohya_repeat_folders_are_reported_and_count_per_image(project, mixed):
    from loradeck.trainer.dataset.repeat_folders import image_repeats, weighted_count

    folder = mixed["portrait.jpg"].parent
    report = import_paths(project, [folder])
    assert report.repeat_folders == {str(folder / "10_mychar"): 10}
    assert image_repeats(project) == {"char": 10}  # only the image that sat in 10_mychar/
    assert weighted_count(["char", "portrait", "cmyk"], image_repeats(project)) == 12


def test_kohya_folder_repeats_set_the_steps_of_check_and_of_a_new_run(project, tmp_path):
    from loradeck.trainer.config import resolve as run_config
    from loradeck.trainer.config.project_settings import update
    from loradeck.trainer.dataset import preflight
    from loradeck.trainer.dataset.prep import prep_project

    src = tmp_path / "train"
    (src / "5_hero").mkdir(parents=True)
    (src / "1_bg").mkdir()
    for k in range(2):
        noise(64, 64, seed=20 + k).save(src / "5_hero" / f"hero{k}.png")
    noise(64, 64, seed=30).save(src / "1_bg" / "bg.png")
    import_paths(project, [src])
    update(project.settings_file, "prep", {"resolution": 64})
    update(project.settings_file, "train", {"max_train_epochs": 2, "batch_size": 1, "repeats": 2})
    prep_project(project)
    steps = preflight.check(project)["steps"]
    # (2 images x 5 + 1 image x 1) x [train] repeats 2 = 22 per epoch, x 2 epochs
    assert (steps["images"], steps["folder_weighted_images"], steps["steps_per_epoch"]) == (3, 11, 22)
    assert steps["total_steps"] == 44
    assert "3 images (11 with kohya folder repeats) x 2 repeats" in preflight.render(preflight.check(project))
    resolved = run_config.resolve(project)
    assert resolved.dataset["image_repeats"] == {"hero0": 5, "hero1": 5}
    # the run keeps its counts: they are written into its config.toml and read back from there
    path = tmp_path / "config.toml"
    path.write_text(run_config.to_toml(resolved))
    assert run_config.read_run_config(path)[1]["image_repeats"] == {"hero0": 5, "hero1": 5}


def test_missing_paths_and_orphan_captions_are_refused_and_the_rest_imports(project, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    noise(64, 64).save(src / "ok.png")
    (src / "lonely.txt").write_text("no image")
    report = import_paths(project, [tmp_path / "nope", src])
    refused = dict(report.refused)
    assert refused[str(tmp_path / "nope")] == "no such file or folder"
    assert refused[str(src / "lonely.txt")] == "caption file without an image beside it"
    assert report.imported == ["ok.png"]


def test_a_file_with_the_wrong_extension_is_stored_under_its_real_format(project, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    noise(64, 64).save(src / "looks_like.png", "JPEG")
    noise(64, 64, seed=3).save(src / "old.JFIF", "JPEG")
    report = import_paths(project, [src])
    assert report.imported == ["looks_like.jpg", "old.jpg"]  # names prep and training list
    assert (project.originals / "looks_like.jpg").read_bytes() == (src / "looks_like.png").read_bytes()


def test_progress_reports_start_each_file_and_failures(project, mixed):
    calls = []
    import_paths(project, [mixed["portrait.jpg"], mixed["empty.png"]], on_progress=lambda *a: calls.append(a))
    assert calls[0] == (0, 2, "", None)
    assert calls[1] == (1, 2, "portrait.jpg", None)
    assert calls[2] == (2, 2, "empty.png", "empty file")


def test_stop_request_keeps_what_was_imported(project, mixed):
    seen = []
    report = import_paths(project, [mixed["portrait.jpg"], mixed["pic.webp"]],
                          on_progress=lambda d, *_: seen.append(d), should_stop=lambda: len(seen) > 1)
    assert report.stopped and report.imported == ["portrait.jpg"]
    assert load_index(project)  # saved despite the stop


def test_probe_describes_upright_size_and_refuses_bad_data(mixed):
    info = image_probe.probe(mixed["portrait.jpg"])
    assert (info.width, info.height, info.orientation, info.format) == (80, 120, 6, "JPEG")
    assert image_probe.probe(mixed["cmyk.jpg"]).mode == "CMYK"
    assert image_probe.probe(mixed["deep16.png"]).mode.startswith("I")
    for name, words in [("truncated.jpg", "truncated"), ("bomb.png", "absurd"), ("empty.png", "empty")]:
        try:
            image_probe.probe(mixed[name])
        except image_probe.ImageRefused as e:
            assert words in str(e)
        else:
            raise AssertionError(f"{name} was accepted")
    assert Image.MAX_IMAGE_PIXELS == image_probe.MAX_PIXELS


def test_known_formats_pillow_cannot_read_are_named(project, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64)
    (src / "scan.tga").write_bytes(b"")
    Image.new("RGB", (16, 16)).save(src / "odd.pcx")
    report = import_paths(project, [src])
    refused = {Path(p).name: why for p, why in report.refused}
    assert refused["IMG_0001.HEIC"].startswith("unsupported format HEIC")
    assert refused["odd.pcx"].startswith("unsupported format PCX")
    assert refused["scan.tga"] == "empty file"


def test_files_already_inside_the_project_are_not_imported_again(project, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    noise(64, 64).save(src / "a.png")
    import_paths(project, [src])
    report = import_paths(project, [project.path])
    assert report.imported == [] and report.refused
    assert all(why == "already inside the project" for _, why in report.refused)


def test_clean_stem_keeps_unicode_and_removes_path_tricks():
    assert clean_stem("café_猫") == "café_猫"
    assert clean_stem("../../etc") == "_.._etc"
    assert clean_stem("a:b*c?") == "a_b_c_"
    assert clean_stem("...") == "image"
    assert len(clean_stem("é" * 200).encode()) <= 120


def test_an_unreadable_file_is_refused_and_the_rest_imports(project, tmp_path, monkeypatch):
    import errno

    src = tmp_path / "in"
    src.mkdir()
    noise(64, 64, seed=1).save(src / "locked.png")
    noise(64, 64, seed=2).save(src / "open.png")
    real_read = Path.read_bytes

    def read_bytes(self):
        if self.name == "locked.png":
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    report = import_paths(project, [src])
    assert report.refused == [(str(src / "locked.png"), "unreadable: Permission denied")]
    assert report.imported == ["open.png"]


def test_sidecars_are_written_with_the_projects_own_caption_extension(root, tmp_path):
    from loradeck.trainer.dataset.project import create_project

    kohya = create_project("kohya", root, caption_extension=".caption")
    src = tmp_path / "in"
    src.mkdir()
    noise(64, 64, seed=1).save(src / "p.png")
    (src / "p.txt").write_text("from txt")
    (src / "p.caption").write_text("from caption")
    report = import_paths(kohya, [src])
    assert report.captions_imported == ["p.caption"]
    assert (kohya.dataset / "p.caption").read_text() == "from caption\n"
    assert not (kohya.dataset / "p.txt").exists()
