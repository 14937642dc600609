"""The caption policy as pure functions: affixes applied once, model text cleaned."""

from __future__ import annotations

import pytest

from loradeck.trainer.captions.blip_captioning import CaptionOptions, apply_affixes, clean_caption
from loradeck.trainer.errors import ConfigError


def test_prefix_and_suffix_join_with_a_comma():
    assert apply_affixes("a dog on a beach", "ohwx", "photo") == "ohwx, a dog on a beach, photo"


@pytest.mark.parametrize("prefix,suffix", [("ohwx", ""), ("ohwx,", "by artist"), ("OHWX man", ", film grain"),
                                           ("", "style")])
def test_affixes_are_idempotent(prefix, suffix):
    once = apply_affixes("a man standing in a field", prefix, suffix)
    assert apply_affixes(once, prefix, suffix) == once
    assert apply_affixes(apply_affixes(once, prefix, suffix), prefix, suffix) == once


def test_affix_already_in_model_text_is_not_doubled_case_insensitively():
    assert apply_affixes("Ohwx, a cat", "ohwx") == "Ohwx, a cat"
    assert apply_affixes("a cat, style", suffix="style") == "a cat, style"


def test_affix_only_matches_whole_words():
    # "ohwxyz" does not contain the trigger "ohwx" as a word, so it is still added.
    assert apply_affixes("ohwxyz dog", "ohwx") == "ohwx, ohwxyz dog"
    assert apply_affixes("a lifestyle", suffix="style") == "a lifestyle, style"


def test_affix_with_its_own_punctuation_joins_with_a_space():
    assert apply_affixes("a dog", "ohwx,") == "ohwx, a dog"
    assert apply_affixes("a dog", suffix=", by someone") == "a dog, by someone"


def test_clean_caption_is_one_tidy_line():
    assert clean_caption("  a dog ,  on\n a beach . ") == "a dog, on a beach."


@pytest.mark.parametrize("field,value", [("batch_size", 0), ("beams", 0), ("top_p", 0.0), ("top_p", 1.5),
                                         ("temperature", 0), ("max_length", 0), ("min_length", -1),
                                         ("prefix", "two\nlines")])
def test_bad_options_are_refused_with_a_config_error(field, value):
    with pytest.raises(ConfigError):
        CaptionOptions(**{field: value}).validate()


def test_min_length_above_max_length_is_refused():
    with pytest.raises(ConfigError, match="longer than max"):
        CaptionOptions(min_length=20, max_length=10).validate()
