"""kohya's repeat folders: images imported from `10_name/` are seen 10 times per epoch.

kohya's train_network.py reads the repeat count from the name of the folder an image sits in
(`N_concept`); loradeck flattens imports into originals/, so the count is recovered from where each
original came from (the import index records its source path). Only the image's own folder counts,
as in kohya. An image imported from a kohya dataset TOML records its subset's `num_repeats` in the
index instead (loradeck.trainer.dataset.formats), which takes precedence. The run's [train] repeats
multiplies on top (both default to 1).

A run records the per-image counts in its config.toml ([dataset] image_repeats) when it is created,
so a resumed run keeps the plan it started with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

from loradeck.trainer.dataset.import_index import load_index

_REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")


def repeats_of_folder(name: str) -> int | None:
    """N for a kohya `N_name` folder name (N >= 1), else None."""
    m = _REPEAT_FOLDER.match(name)
    return int(m.group(1)) if m and int(m.group(1)) > 0 else None


def repeats_of_source(source: str) -> int:
    """The repeat count an imported file gets from the folder it was imported from (1 if none)."""
    return repeats_of_folder(Path(source).parent.name) or 1


def image_repeats(project) -> dict[str, int]:
    """{image stem: N} for the project's images imported from kohya repeat folders with N > 1."""
    counts = {}
    for entry in load_index(project).values():
        n = entry.get("repeats") or repeats_of_source(str(entry.get("source") or ""))
        if n > 1:
            counts[Path(entry["file"]).stem] = n
    return dict(sorted(counts.items()))


def weighted_count(stems, counts: Mapping[str, int] | None) -> int:
    """How many images an epoch holds before [train] repeats: each image counted N times."""
    counts = counts or {}
    return sum(int(counts.get(stem, 1)) for stem in stems)
