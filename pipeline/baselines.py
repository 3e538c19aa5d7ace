"""Captioners without a language model, to put the LLM's scores in context.

- :func:`template_caption`: rules over one composition record (no learning). It says what the record says, in
  RSICD's usual shape ("some buildings and green trees are around a pond").
- :class:`NearestNeighbour`: the caption of the training image whose composition vector is closest
  (``composition.features.vector``, standardised; :mod:`llm.retrieval`), choosing among that image's captions the one
  that agrees most with its siblings (a consensus caption); with ``k`` > 1, the consensus of the captions of the k
  closest training images (``nearest_consensus`` in the pipeline).
"""

from __future__ import annotations

from llm.consensus import CiderD, document_frequencies
from llm.retrieval import CompositionIndex

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


class NearestNeighbour:
    """Retrieval baseline: the consensus caption of the closest training composition (Euclidean on standardised
    features; :class:`llm.retrieval.CompositionIndex`, which the retrieval-augmented prompts read too).

    With ``k`` > 1 it is the k-nearest-neighbour consensus of Devlin et al. (2015): of all the captions of the k
    closest training images, the one with the highest CIDEr-D against the others (:mod:`llm.consensus`, idf from the
    training captions). One index serves every ``k``.
    """

    def __init__(self, train_records: list[dict], train_captions: list[list[str]], num_classes: int,
                 names: list[str] | None = None):
        if not train_records:
            raise ValueError("nearest-neighbour baseline needs at least one training composition")
        names = names or [r.get("image", str(i)) for i, r in enumerate(train_records)]
        self.index = CompositionIndex(names, train_records, train_captions, num_classes)
        self.cider = CiderD(document_frequencies(train_captions))

    def caption(self, records: list[dict], k: int = 1) -> list[str]:
        out = []
        for near in self.index.neighbours(records, k, exclude=False):
            pool = [c for nb in near for c in nb.captions] if k > 1 else near[0].captions[:1]
            out.append(pool[self.cider.choose(pool)])
        return out
