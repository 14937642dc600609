"""The train form's step line is `loradeck check`'s count (loradeck.trainer.train.step_count): per bucket,
with partial batches."""

from __future__ import annotations

from PIL import Image
from textual.widgets import Static
from tui_runs_helpers import ScreenApp, text_of

from loradeck.trainer.config import project_settings as settings
from loradeck.trainer.dataset import preflight
from loradeck.tui.screens.train_form import TrainFormScreen


async def test_the_form_counts_a_partial_batch_per_bucket_as_check_does(project):
    for k, size in enumerate([(64, 64)] * 5 + [(72, 56)] * 3 + [(56, 72)]):  # buckets of 5, 3 and 1
        Image.new("RGB", size, (30 * k, 90, 200 - 20 * k)).save(project.dataset / f"img{k}.png")
        (project.dataset / f"img{k}.txt").write_text(f"a photo, shape {k}")
    settings.update(project.settings_file, "train", {"batch_size": 2, "repeats": 3, "max_train_epochs": 2,
                                                     "resolution": 64})
    checked = preflight.check(project)["steps"]["total_steps"]
    assert checked == 30  # (8 + 5 + 2) batches an epoch x 2; images alone would say ceil(27 / 2) x 2 = 28
    app = ScreenApp(lambda: TrainFormScreen(project))
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert text_of(app.screen.query_one("#steps", Static)) == (
            "30 steps: 9 images × 3 repeats ÷ batch 2 in 3 buckets = 15 steps/epoch × 2 epochs")
