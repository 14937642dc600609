"""Sample-prompt suggestions for a run: the project's trigger word with its dataset's most frequent tags.

    suggest(project, count=4) -> ["zxq style", "zxq style, red circle, blue background", ...]

A LoRA is judged by what it does to prompts like its captions: the trigger alone (does it carry the
concept by itself?), then the trigger with the tags most of the dataset shares, two per prompt, most
frequent first. Tags that only one caption has say nothing about the dataset and are left out; when
the captions are sentences (BLIP) rather than tags, a real caption stands in. Reads the caption files
through loradeck.trainer.dataset.caption_ops; no torch.
"""

from __future__ import annotations

from loradeck.trainer.config import project_settings as settings_mod
from loradeck.trainer.dataset import caption_ops
from loradeck.trainer.dataset.project import Project

TAGS_PER_PROMPT = 2


def suggest(project: Project, count: int = 4) -> list[str]:
    """Up to `count` distinct prompts (see the module docstring); [] for a project with no trigger word
    and no captions."""
    trigger = settings_mod.load(project.settings_file).project.trigger_word.strip()
    frequent = [tag for tag, n in caption_ops.tag_frequency(project) if n >= 2 and tag != trigger]
    prompts: list[str] = [trigger] if trigger else []
    for i in range(0, len(frequent), TAGS_PER_PROMPT):
        if len(prompts) >= count:
            break
        prompts.append(", ".join(([trigger] if trigger else []) + frequent[i:i + TAGS_PER_PROMPT]))
    if not frequent and len(prompts) < count:  # sentence captions share no tags: a real one, trigger first
        captioned = [row.text for row in caption_ops.list_captions(project) if row.text]
        if captioned:
            example = caption_ops.with_trigger(captioned[0], trigger) if trigger else captioned[0]
            prompts.append(example)
    seen: set[str] = set()
    return [p for p in prompts if not (p in seen or seen.add(p))][:count]
