"""Which booru tags a tagger's probabilities become, and how they merge with a caption (pure).

    select_tags(probs, labels, TagRules) -> ["character", "general", ...]
    merge_tags(existing_caption, new_tags, policy) -> caption text | None (None: leave it)

Selection: character tags (category 4) above `character_threshold`, then general tags (category 0)
above `general_threshold`, each group most confident first (`order = "confidence"` mixes the two
groups by confidence instead). Rating tags (category 9) are off unless `include_rating`; then the
single most likely rating goes last. Excluded tags are dropped whichever spelling (underscores or
spaces, any case) names them. `replace_underscores` writes `long hair` for `long_hair`, except
for kaomoji such as `^_^`, whose underscore is part of the face.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loradeck.trainer.captions.wd14_tagger import CATEGORY_CHARACTER, CATEGORY_GENERAL, CATEGORY_RATING
from loradeck.trainer.config.project_settings import TAG_ORDERS
from loradeck.trainer.dataset.caption_store import join_tags, split_tags

POLICIES = ("skip", "overwrite", "append")
ORDERS = TAG_ORDERS  # the [tagger] schema's (loradeck.trainer.config.project_settings)

# Tags whose underscore is drawn, not a word separator (booru kaomoji tags).
KAOMOJI = frozenset({"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3",
                     "6_9", ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"})


@dataclass
class TagRules:
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    include_rating: bool = False
    replace_underscores: bool = True
    exclude: list[str] = field(default_factory=list)
    order: str = "character-first"


def tag_key(tag: str) -> str:
    """How two spellings of a tag compare: case-insensitive, underscores as spaces."""
    return " ".join(tag.replace("_", " ").lower().split())


def display_name(name: str, replace_underscores: bool) -> str:
    if replace_underscores and name not in KAOMOJI:
        return name.replace("_", " ")
    return name


def select_tags(probs, labels, rules: TagRules) -> list[str]:
    """The tags for one image: `probs[i]` is the probability of `labels[i]` (trainer.captions.wd14_tagger.Label)."""
    excluded = {tag_key(t) for t in rules.exclude}
    characters, general, ratings = [], [], []
    for label, p in zip(labels, probs):
        p = float(p)
        if label.category == CATEGORY_CHARACTER and p >= rules.character_threshold:
            characters.append((p, label.name))
        elif label.category == CATEGORY_GENERAL and p >= rules.general_threshold:
            general.append((p, label.name))
        elif label.category == CATEGORY_RATING:
            ratings.append((p, label.name))

    def by_confidence(items):  # ties keep the CSV order (sorted is stable)
        return sorted(items, key=lambda item: -item[0])

    if rules.order == "confidence":
        chosen = by_confidence(characters + general)
    else:
        chosen = by_confidence(characters) + by_confidence(general)
    if rules.include_rating and ratings:
        chosen.append(max(ratings, key=lambda item: item[0]))
    out, seen = [], set()
    for _p, name in chosen:
        key = tag_key(name)
        if key in excluded or key in seen:
            continue
        seen.add(key)
        out.append(display_name(name, rules.replace_underscores))
    return out


def merge_tags(existing: str | None, tags: list[str], policy: str) -> str | None:
    """The caption body to write for an image that has `existing` text (None / "" for none).

    skip: tags only for an uncaptioned image; overwrite: the tags replace the caption; append: the
    caption keeps its text and order, and only tags it does not have yet are added at the end.
    None means "leave the caption as it is".
    """
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}")
    if not existing or policy == "overwrite":
        return join_tags(tags) if tags else None
    if policy == "skip":
        return None
    have = {tag_key(t) for t in split_tags(existing)}
    new = [t for t in tags if tag_key(t) not in have]
    if not new:
        return None
    return existing.rstrip().rstrip(",") + ", " + join_tags(new)
