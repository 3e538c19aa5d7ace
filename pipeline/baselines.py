"""Captioners without a language model, to put the LLM's scores in context.

- :func:`template_caption`: rules over one composition record (no learning). It says what the record says, in
  RSICD's usual shape ("some buildings and green trees are around a pond").
- :class:`NearestNeighbour`: the caption of the training image whose composition vector is closest
  (``composition.features.vector``, standardised), choosing among that image's captions the one that agrees most
  with its siblings (a consensus caption).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from composition.features import vector

# How each group is named in a caption; a group missing here is named as in its class table.
NOUNS = {
    "artificial surface": ("a road", "roads"),
    "natural surface": ("a piece of bare land", "bare land"),
    "water": ("a pond", "ponds"),
    "vegetation": ("a green tree", "green trees"),
    "building": ("a building", "buildings"),
    "fences and poles": ("a fence", "fences"),
    "people and animals": ("a person", "people"),
    "vehicles": ("a car", "cars"),
    "markers and obstacles": ("an obstacle", "obstacles"),
}
LONG = {"water": ("a river", "rivers"), "artificial surface": ("a road", "roads"), "vegetation": ("a line of trees", "trees")}
WHERE = {
    "left of": "on the left of", "right of": "on the right of", "above": "above", "below": "below",
    "above left of": "above", "above right of": "above", "below left of": "below", "below right of": "below",
    "on": "in", "surrounded by": "surrounded by", "next to": "next to",
}


MASS = {"vegetation": "green trees", "natural surface": "bare land", "artificial surface": "a paved area"}


def _phrase(cls: dict, elongated: float = 3.0, scene: bool = False) -> str:
    """How a caption names one class: its noun, with a / some / many from its region count."""
    name = cls["name"]
    if scene and name in MASS and cls.get("elongation", 1.0) < elongated:
        return MASS[name]
    single, plural = (LONG if cls.get("elongation", 1.0) >= elongated and name in LONG else NOUNS).get(
        name, (f"a {name}", name))
    n = int(cls.get("regions", 1) or 1)
    if n <= 1:
        return single
    return f"{'some' if n <= 4 else 'many'} {plural}"


def template_caption(record: dict, min_percent: float = 2.0) -> str:
    """A caption from a composition record by fixed rules.

    The dominant class (largest, unlabeled aside) is the scene; the next class above ``min_percent`` is placed
    against it with the record's own relation when it has one, and a third is added with "with".
    """
    classes = [c for c in record.get("classes", []) if c["name"] != "unlabeled"]
    if not classes:
        return "an aerial image with nothing recognisable ."
    main, others = classes[0], [c for c in classes[1:] if c["percent"] >= min_percent][:2]
    scene = _phrase(main, scene=True)
    if not others:
        return f"this is {scene} ." if not scene.startswith(("some", "many")) else f"there are {scene} ."
    rel = {(r["subject"], r["object"]): r["relation"] for r in record.get("relations", [])}
    subject = _phrase(others[0])
    verb = "are" if subject.startswith(("some", "many")) else "is"
    relation = rel.get((others[0]["name"], main["name"]))
    if relation is None or (relation == "on" and main["percent"] >= 50):
        where = "in"
    else:
        where = WHERE.get(relation, "near")
    tail = f" with {_phrase(others[1])}" if len(others) > 1 else ""
    return f"{subject} {verb} {where} {scene}{tail} ."


def _consensus(captions: list[str]) -> str:
    """The caption sharing most words with its siblings (ties: the first)."""
    if len(captions) == 1:
        return captions[0]
    bags = [Counter(c.lower().split()) for c in captions]

    def agreement(i: int) -> float:
        return sum(sum((bags[i] & bags[j]).values()) / max(1, sum(bags[i].values())) for j in range(len(bags)) if j != i)

    return captions[max(range(len(captions)), key=agreement)]


class NearestNeighbour:
    """Retrieval baseline: caption of the closest training composition (Euclidean on standardised features)."""

    def __init__(self, train_records: list[dict], train_captions: list[list[str]], num_classes: int):

        if not train_records:
            raise ValueError("nearest-neighbour baseline needs at least one training composition")
        self.num_classes = num_classes
        x = np.stack([vector(r, num_classes) for r in train_records]).astype(np.float64)
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        self.x = (x - self.mean) / self.std  # (N, F)
        self.captions = [_consensus(c) for c in train_captions]

    def caption(self, records: list[dict]) -> list[str]:

        q = (np.stack([vector(r, self.num_classes) for r in records]) - self.mean) / self.std  # (M, F)
        # squared distances without an (M, N, F) tensor: |q|^2 - 2 q.x + |x|^2
        d = (q**2).sum(1)[:, None] - 2 * q @ self.x.T + (self.x**2).sum(1)[None, :]
        return [self.captions[i] for i in d.argmin(1)]
