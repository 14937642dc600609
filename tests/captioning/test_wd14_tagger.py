"""The WD14 tagger: a tiny ONNX model with the real signature, built here with onnx.helper.

The colour model (loradeck.trainer.captions.wd14_synthetic, channels=0) turns the mean BGR colour of an image into
tag probabilities through weights the tests choose, so a red picture fires exactly the tags a test
says it should, through onnxruntime, the preprocessing, the thresholds and the caption store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from loradeck.trainer.captions.tag_policy import TagRules, merge_tags, select_tags
from loradeck.trainer.captions.wd14_synthetic import write_tagger
from loradeck.trainer.captions.wd14_tagger import Label, load_tagger, prepare_image
from loradeck.trainer.captions.wd14_tagging import TagOptions, tag_project
from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.dataset import caption_store
from loradeck.trainer.dataset.project import create_project, dataset_images
from loradeck.trainer.errors import ConfigError, ModelError
from loradeck.trainer.events import parse_line

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (name, category, index of the BGR channel that fires it): red images fire the red tags, etc.
TAGS = [("general", 9, 0), ("sensitive", 9, 2),
        ("red_theme", 0, 2), ("blue_sky", 0, 0), ("long_hair", 0, 2), ("^_^", 0, 2), ("smile", 0, 1),
        ("red_character", 4, 2), ("blue_character", 4, 0)]
# Probability when the channel is full: red_theme 0.99 > ^_^ 0.95 > long_hair 0.6; red_character 0.9.
STRENGTH = {"red_theme": 0.99, "long_hair": 0.6, "^_^": 0.95, "red_character": 0.9, "blue_sky": 0.97,
            "blue_character": 0.5, "smile": 0.7, "general": 0.8, "sensitive": 0.3}


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


@pytest.fixture(scope="module")
def color_tagger(tmp_path_factory):
    """A folder with model.onnx + selected_tags.csv: tag i fires with STRENGTH when its channel is 255."""
    folder = tmp_path_factory.mktemp("wd14-color")
    weight = np.zeros((3, len(TAGS)))
    bias = np.full(len(TAGS), -12.0)  # a channel at 0 gives ~0 for every tag
    for i, (name, _cat, channel) in enumerate(TAGS):
        weight[channel, i] = _logit(STRENGTH[name]) + 12.0
    write_tagger(folder, [(n, c) for n, c, _ in TAGS], size=16, weight=weight, bias=bias)
    return folder


def _project(root, colours, name="tags", trigger="", **settings):
    project = create_project(name, root, trigger_word=trigger, **settings)
    for i, rgb in enumerate(colours):
        Image.new("RGB", (24 + 8 * (i % 3), 24), rgb).save(project.dataset / f"img_{i:02d}.png")
    return project


def _captions(project):
    return {p.name: caption_store.read_caption(p) for p in dataset_images(project)}


RED, BLUE = (255, 0, 0), (0, 0, 255)


# --- the model files --------------------------------------------------------------------------------

def test_preprocessing_is_white_padded_square_bgr_float32_of_the_model_size(tmp_path):
    path = tmp_path / "tall.png"
    Image.new("RGB", (30, 40), (200, 10, 30)).save(path)
    x = prepare_image(path, 16)
    assert x.shape == (16, 16, 3) and x.dtype == np.float32
    assert x[0, 0].tolist() == [255, 255, 255]                      # padding is white
    assert x[8, 8].tolist() == [30, 10, 200]                         # BGR, 0-255


def test_tagger_reads_input_size_and_labels_and_predicts_probabilities(color_tagger):
    tagger = load_tagger(str(color_tagger), device="cpu")
    assert tagger.size == 16 and tagger.provider == "CPUExecutionProvider"
    assert [lab.category for lab in tagger.labels] == [c for _, c, _ in TAGS]
    probs = tagger.predict(np.full((3, 16, 16, 3), [0, 0, 255], np.float32))  # BGR red
    assert probs.shape == (3, len(TAGS))
    red = dict(zip([n for n, _, _ in TAGS], probs[0]))
    assert red["red_theme"] == pytest.approx(0.99, abs=1e-3) and red["blue_sky"] < 1e-3


def test_csv_that_does_not_match_the_model_is_refused(tmp_path, color_tagger):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "model.onnx").write_bytes((color_tagger / "model.onnx").read_bytes())
    (folder / "selected_tags.csv").write_text("tag_id,name,category,count\n1,a,0,5\n")
    with pytest.raises(ModelError, match="9 outputs but selected_tags.csv lists 1"):
        load_tagger(str(folder), device="cpu")


def test_folder_without_the_model_files_names_what_is_missing(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelError, match="has no model.onnx or selected_tags.csv"):
        load_tagger(str(tmp_path / "m"))


def test_missing_hub_model_offline_is_one_line_naming_how_to_fetch_it(tmp_path, root):
    project = _project(root, [RED])
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"),
               PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "loradeck.trainer", "caption", project.name, "--root", str(root),
                           "--tagger", "wd14"], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines[-1].startswith("error: tagger model 'SmilingWolf/wd-vit-tagger-v3' is not in the Hugging Face"
                                " cache and HF_HUB_OFFLINE is set")
    assert "hf download SmilingWolf/wd-vit-tagger-v3 model.onnx selected_tags.csv" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert caption_store.read_caption(dataset_images(project)[0]) is None


# --- selecting tags (pure) --------------------------------------------------------------------------

LABELS = [Label(n, c) for n, c, _ in TAGS]


def _probs(**values):
    return [values.get(n, 0.0) for n, _, _ in TAGS]


def test_general_and_character_thresholds_are_separate():
    probs = _probs(red_theme=0.5, red_character=0.5, blue_character=0.9)
    assert select_tags(probs, LABELS, TagRules(general_threshold=0.4, character_threshold=0.85)) == \
        ["blue character", "red theme"]
    assert select_tags(probs, LABELS, TagRules(general_threshold=0.6, character_threshold=0.45)) == \
        ["blue character", "red character"]


def test_rating_is_off_by_default_and_the_most_likely_one_goes_last_when_on():
    probs = _probs(general=0.9, sensitive=0.95, smile=0.8)
    assert select_tags(probs, LABELS, TagRules()) == ["smile"]
    assert select_tags(probs, LABELS, TagRules(include_rating=True)) == ["smile", "sensitive"]


def test_character_tags_come_first_then_general_by_confidence():
    probs = _probs(smile=0.5, red_theme=0.9, long_hair=0.7, blue_character=0.86, red_character=0.99)
    assert select_tags(probs, LABELS, TagRules()) == \
        ["red character", "blue character", "red theme", "long hair", "smile"]
    assert select_tags(probs, LABELS, TagRules(order="confidence")) == \
        ["red character", "red theme", "blue character", "long hair", "smile"]


def test_exclusions_match_either_spelling_and_any_case():
    probs = _probs(smile=0.9, long_hair=0.9, red_theme=0.9)
    assert select_tags(probs, LABELS, TagRules(exclude=["Long Hair", "red_theme"])) == ["smile"]


def test_underscores_become_spaces_except_in_kaomoji_unless_kept():
    probs = _probs(long_hair=0.9, **{"^_^": 0.8})
    assert select_tags(probs, LABELS, TagRules()) == ["long hair", "^_^"]
    assert select_tags(probs, LABELS, TagRules(replace_underscores=False)) == ["long_hair", "^_^"]


def test_merge_policies():
    assert merge_tags("a cat, smile", ["smile", "red theme"], "skip") is None
    assert merge_tags(None, ["smile"], "skip") == "smile"
    assert merge_tags("a cat, smile", ["smile", "red theme"], "overwrite") == "smile, red theme"
    assert merge_tags("a cat, long_hair", ["long hair", "red theme"], "append") == "a cat, long_hair, red theme"
    assert merge_tags("a cat, smile", ["smile"], "append") is None


# --- the engine over a project ----------------------------------------------------------------------

def test_tags_are_written_for_uncaptioned_images_with_the_trigger_once(root, color_tagger):
    project = _project(root, [RED, BLUE], trigger="zxq style")
    report = tag_project(project, TagOptions(model=str(color_tagger), device="cpu"))
    assert report.status == "completed" and sorted(report.captioned) == ["img_00.png", "img_01.png"]
    assert _captions(project) == {"img_00.png": "zxq style, red character, red theme, ^_^, long hair",
                                  "img_01.png": "zxq style, blue sky"}
    again = tag_project(project, TagOptions(model=str(color_tagger), device="cpu", policy="overwrite"))
    assert again.captioned == [] and len(again.unchanged) == 2  # same tags, trigger not doubled
    assert _captions(project)["img_00.png"].count("zxq style") == 1


def test_skip_overwrite_and_append_policies_over_existing_captions(root, color_tagger):
    project = _project(root, [RED, RED, BLUE])
    images = dataset_images(project)
    caption_store.write_caption(images[0], "my own words, long hair")
    caption_store.write_caption(images[2], "sky picture")
    model = str(color_tagger)

    skip = tag_project(project, TagOptions(model=model, device="cpu"))
    assert skip.skipped == ["img_00.png", "img_02.png"] and skip.captioned == ["img_01.png"]
    assert _captions(project)["img_00.png"] == "my own words, long hair"

    append = tag_project(project, TagOptions(model=model, device="cpu", policy="append"))
    assert _captions(project)["img_00.png"] == "my own words, long hair, red character, red theme, ^_^"
    assert _captions(project)["img_02.png"] == "sky picture, blue sky"
    assert "img_01.png" in append.unchanged  # it already had every tag
    assert {c["image"]: c["before"] for c in append.changes} == {
        "img_00.png": "my own words, long hair", "img_02.png": "sky picture"}

    overwrite = tag_project(project, TagOptions(model=model, device="cpu", policy="overwrite"))
    assert _captions(project)["img_00.png"] == "red character, red theme, ^_^, long hair"
    assert _captions(project)["img_02.png"] == "blue sky"
    # Each change carries what was there before, so the batch can be recorded and undone.
    assert {c["image"]: (c["before"], c["after"]) for c in overwrite.changes} == {
        "img_00.png": ("my own words, long hair, red character, red theme, ^_^",
                       "red character, red theme, ^_^, long hair"),
        "img_02.png": ("sky picture, blue sky", "blue sky")}


def test_append_keeps_the_trigger_first_and_does_not_add_it_twice(root, color_tagger):
    project = _project(root, [RED], trigger="zxq")
    caption_store.write_caption(dataset_images(project)[0], "zxq, long hair")
    for _ in range(2):
        tag_project(project, TagOptions(model=str(color_tagger), device="cpu", policy="append"))
    assert _captions(project)["img_00.png"] == "zxq, long hair, red character, red theme, ^_^"


def test_project_tagger_settings_apply_and_flags_override_them(root, color_tagger):
    project = _project(root, [RED])
    settings_mod.update(project.settings_file, "tagger", {
        "model": str(color_tagger), "general_threshold": 0.9, "exclude": ["^_^"], "replace_underscores": False,
        "include_rating": True})
    tag_project(project, TagOptions(device="cpu"))
    assert _captions(project)["img_00.png"] == "red_character, red_theme, sensitive"
    tag_project(project, TagOptions(device="cpu", policy="overwrite", general_threshold=0.5,
                                    character_threshold=0.95, include_rating=False))
    assert _captions(project)["img_00.png"] == "red_theme, long_hair"


def test_bad_tagger_settings_are_refused_by_name(root):
    project = _project(root, [])
    with pytest.raises(ConfigError, match=r"\[tagger\] general_threshold must be between 0 and 1"):
        settings_mod.update(project.settings_file, "tagger", {"general_threshold": 1.5})
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in \[tagger\]: treshold"):
        settings_mod.update(project.settings_file, "tagger", {"treshold": 0.5})


def test_batched_and_one_at_a_time_write_the_same_tags(root, color_tagger):
    colours = [RED, BLUE, (255, 255, 0), (0, 255, 0), (128, 0, 255), (255, 0, 128), (10, 10, 10)]
    one, batched = _project(root, colours, name="one"), _project(root, colours, name="batched")
    tag_project(one, TagOptions(model=str(color_tagger), device="cpu", batch_size=1))
    report = tag_project(batched, TagOptions(model=str(color_tagger), device="cpu", batch_size=4))
    assert report.batch_size == 4
    assert _captions(one) == _captions(batched) and _captions(one)["img_00.png"]


def test_a_broken_image_is_reported_and_the_rest_tagged(root, color_tagger):
    project = _project(root, [RED, BLUE])
    (project.dataset / "img_00.png").write_bytes(b"not a png")
    events = []
    report = tag_project(project, TagOptions(model=str(color_tagger), device="cpu"),
                         on_event=lambda t, **f: events.append((t, f)))
    assert list(report.failed) == ["img_00.png"] and report.captioned == ["img_01.png"]
    assert ("item_failed", "img_00.png") in [(t, f.get("item")) for t, f in events]


def test_fixed_batch_model_is_run_one_image_at_a_time(tmp_path, root):
    folder = write_tagger(tmp_path / "b1", [("smile", 0)], size=8, weight=np.full((3, 1), 20.0),
                          bias=np.zeros(1), fixed_batch=1)
    project = _project(root, [RED, BLUE, RED])
    report = tag_project(project, TagOptions(model=str(folder), device="cpu", batch_size=8))
    assert report.batch_size == 1 and len(report.captioned) == 3


# --- the CLI ----------------------------------------------------------------------------------------

SLOW_CLI = """
import sys, time
import loradeck.trainer.captions.wd14_tagger as tagger
real = tagger.Tagger.predict
def slow(self, batch):
    time.sleep(0.3)
    return real(self, batch)
tagger.Tagger.predict = slow
from loradeck.trainer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _env():
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))


def test_cli_streams_progress_and_sigterm_stops_after_the_batch_then_a_rerun_finishes(root, color_tagger):
    project = _project(root, [RED, BLUE] * 8)
    args = ["caption", project.name, "--root", str(root), "--tagger", "wd14", "--model", str(color_tagger),
            "--batch-size", "1", "--device", "cpu", "--events"]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO)
    events, deadline = [], time.monotonic() + 120
    for line in proc.stdout:
        events.append(parse_line(line))
        if events[-1]["type"] == "progress" and events[-1].get("done", 0) >= 2:
            proc.send_signal(signal.SIGTERM)
            break
        assert time.monotonic() < deadline, "no progress from the tagger process"
    rest, err = proc.communicate(timeout=120)
    events += [parse_line(line) for line in rest.splitlines()]
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert events[0]["type"] == "task_started" and events[0]["task"] == "caption" and events[0]["total"] == 16
    assert events[-1]["type"] == "task_finished" and events[-1]["status"] == "stopped"
    done = [p for p in dataset_images(project) if caption_store.has_caption(p)]
    assert 2 <= len(done) < 16

    finish = subprocess.run([sys.executable, "-m", "loradeck.trainer", *args[:-1], "--json"], capture_output=True,
                            text=True, env=_env(), cwd=REPO, timeout=120)
    assert finish.returncode == 0, finish.stderr
    summary = json.loads(finish.stdout)
    assert summary["tagger"] == "wd14" and summary["skipped"] == len(done)
    assert summary["captioned"] == 16 - len(done) and all(caption_store.has_caption(p)
                                                          for p in dataset_images(project))


def test_cli_flags_for_the_other_captioner_are_refused(root, color_tagger):
    from loradeck.trainer.cli import main

    project = _project(root, [RED])
    base = ["caption", project.name, "--root", str(root)]
    for extra, says in ((["--tagger", "wd14", "--beams", "2"], "--beams applies to BLIP only"),
                        (["--general-threshold", "0.5"], "--general-threshold applies to --tagger wd14 only"),
                        (["--policy", "append"], "--policy append adds tags, so it needs --tagger wd14")):
        proc = subprocess.run([sys.executable, "-m", "loradeck.trainer", *base, *extra], capture_output=True, text=True,
                              env=_env(), cwd=REPO, timeout=120)
        assert proc.returncode == 1 and says in proc.stderr, (extra, proc.stderr)
    assert main([*base, "--tagger", "wd14", "--model", str(color_tagger), "--exclude", "^_^,long_hair",
                 "--underscores", "--device", "cpu"]) == 0
    assert _captions(project)["img_00.png"] == "red_character, red_theme"


def test_engine_modules_load_onnxruntime_only_when_a_tagger_is_loaded():
    code = ("import sys, loradeck.trainer.captions.wd14_tagging, loradeck.trainer.captions.wd14_tagger, loradeck.trainer.dataset.formats, loradeck.trainer.dataset.export,"
            " loradeck.trainer.config.project_settings, loradeck.trainer.cli; loradeck.trainer.cli.build_parser(); print('\\n'.join(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                         env=_env())
    loaded = {m.split(".")[0] for m in out.stdout.split()}
    assert not loaded & {"onnxruntime", "onnx", "torch", "textual", "numpy"}


def test_an_overwrite_tagging_run_is_one_undoable_batch(root, color_tagger):
    """A WD14 run that overwrites captions is recorded in the caption journal; undo restores them."""
    from loradeck.trainer.dataset import caption_journal

    project = _project(root, [RED, BLUE])
    for path in dataset_images(project):
        caption_store.write_caption(path, f"hand caption of {path.stem}")
    before = _captions(project)
    report = tag_project(project, TagOptions(model=str(color_tagger), device="cpu", policy="overwrite"))
    assert report.changes and _captions(project) != before
    assert caption_journal.list_batches(project)[-1].label == "tag wd14 (overwrite)"
    caption_journal.undo_last(project)
    assert _captions(project) == before
