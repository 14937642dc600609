"""Sample-prompt suggestions: the trigger, then the trigger with the most frequent tags, two per prompt."""

from __future__ import annotations

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.train import sample_prompts
from tests.dataset.conftest import noise


def _dataset(project, captions: list[str]) -> None:
    for i, text in enumerate(captions):
        noise(8, 8, seed=i).save(project.dataset / f"{i}.png")
        (project.dataset / f"{i}.txt").write_text(text + "\n")


def test_trigger_first_then_the_most_frequent_tags_two_per_prompt(project):
    _dataset(project, ["sks cat, red hat, sitting, grass", "sks cat, red hat, sitting, indoors",
                       "sks cat, red hat, blue scarf, grass", "sks cat, blue scarf, once only"])
    assert sample_prompts.suggest(project) == [
        "sks cat", "sks cat, red hat, blue scarf", "sks cat, grass, sitting"]  # ties: by name


def test_count_limits_and_tags_of_one_caption_are_left_out(project):
    _dataset(project, ["sks cat, a, b", "sks cat, a, b, c", "sks cat, a, d"])
    assert sample_prompts.suggest(project, count=2) == ["sks cat", "sks cat, a, b"]
    assert all("c" not in p.split(", ") for p in sample_prompts.suggest(project, count=9))


def test_sentence_captions_give_the_trigger_and_one_real_caption(project):
    _dataset(project, ["a cat on a sofa", "a cat in the garden"])
    assert sample_prompts.suggest(project) == ["sks cat", "sks cat, a cat on a sofa"]


def test_no_trigger_and_no_captions_suggest_nothing(small_project):
    assert settings.load(small_project.settings_file).project.trigger_word == ""
    assert sample_prompts.suggest(small_project) == []
    _dataset(small_project, ["red hat, smile", "red hat, frown"])
    assert sample_prompts.suggest(small_project) == ["red hat"]  # the tags of one caption only: left out
