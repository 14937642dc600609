"""Hints for the TUI: an engine hint names CLI flags (`use --optimizer adamw`); a TUI user sets the
train form's field of that name instead, so the flag is replaced by the field's label.

The engine keeps one wording for both front ends (its hints are right for the CLI); this module is
the one place the TUI turns them into what its screens offer.
"""

from __future__ import annotations

import re

from loradeck.tui.train_fields import FIELDS, LIMIT_FIELDS

# A flag, and a placeholder after it (N, X, DIR) that means nothing on a form.
_FLAG = re.compile(r"`?--([a-z][a-z0-9-]*)(?:[ =]([A-Z]+)\b)?`?")
SUFFIX = " (train form fields)"


def _labels() -> dict[str, str]:
    """CLI flag name -> the train form's label of that field."""
    labels = {f.name.replace("_", "-"): f.label for f in FIELDS}
    length = next(f.label for f in FIELDS if f.kind == "length")
    for flag in [name.replace("_", "-") for name in LIMIT_FIELDS] + ["steps", "epochs"]:
        labels[flag] = length  # `loradeck train --steps N | --epochs N`
    labels["lr"] = labels["learning-rate"]
    return labels


def form_hint(text: str | None, labels: dict[str, str] | None = None, suffix: str = SUFFIX) -> str | None:
    """`text` with every train flag named as the train form's field (`use --optimizer adamw` ->
    `use “Optimizer” adamw (train form fields)`); flags the form has no field for are left alone.
    Another screen passes its own `labels` (flag name -> field label) and `suffix` (where they are)."""
    if not text or "--" not in text:
        return text
    labels = _labels() if labels is None else labels
    replaced = False

    def field(match: re.Match) -> str:
        nonlocal replaced
        label = labels.get(match.group(1))
        if label is None:
            return match.group(0)
        replaced = True
        return f"“{label}”"

    out = _FLAG.sub(field, re.sub(r"(--[a-z][a-z0-9-]*)=", r"\1 ", text))
    return out + suffix if replaced else out


def caption_hint(text: str) -> str:
    """A captioning error's hint for the TUI: `--model` is the caption dialog's Model field."""
    return form_hint(text, {"model": "Model"}, " (the caption dialog: c, then b)") or text
