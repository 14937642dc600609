"""Config validation reports every problem in one error, as docs/configuration.md promises (item 12.5)."""

from __future__ import annotations

import pytest

from loradeck.trainer.config.train_config import TrainConfig, validate
from loradeck.trainer.errors import ConfigError


def test_a_range_problem_and_a_combination_problem_are_reported_together():
    with pytest.raises(ConfigError) as e:
        validate(TrainConfig(batch_size=0, resolution=7, learning_rate=-1.0, output_name=".x"))
    message = str(e.value)
    for problem in ("batch_size: must be at least 1", "resolution: must be a multiple of 8",
                    "learning_rate: must be positive", "output_name: must be a plain file name"):
        assert problem in message


def test_a_value_of_the_wrong_type_does_not_hide_the_others_nor_crash_the_checks_that_use_it():
    with pytest.raises(ConfigError) as e:
        validate(TrainConfig(resolution="big", alpha=0.0, caption_dropout_rate=2.0))
    message = str(e.value)
    assert "resolution: expected a whole number" in message
    assert "alpha: must be positive" in message and "caption_dropout_rate: must be in [0, 1)" in message


def test_the_cli_reports_batch_size_and_resolution_in_one_error(cli, root):
    from loradeck.trainer.dataset.project import create_project

    create_project("toy", root, base_model="synthetic:tiny")
    proc = cli("train", "toy", "--batch-size", "0", "--resolution", "7", root=root)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "batch_size: must be at least 1" in proc.stderr and "resolution: must be a multiple of 8" in proc.stderr
