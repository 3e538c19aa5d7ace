"""Captioners without a language model, to put the LLM's scores in context.

- :func:`template_caption`: rules over one composition record (no learning). It says what the record says, in
  RSICD's usual shape ("some buildings and green trees are around a pond").
- :class:`NearestNeighbour`: the caption of the training image whose composition vector is closest
  (``composition.features.vector``, standardised; :mod:`llm.retrieval`), choosing among that image's captions the one
  that agrees most with its siblings (a consensus caption); with ``k`` > 1, the consensus of the captions of the k
  closest training images (``nearest_consensus`` in the pipeline).
- :func:`class_oracle`: the most frequent training caption of the image's true category (no model): what a perfect
  scene classifier that then says its class's usual caption would score, the ceiling of any scene classifier.
- :func:`neighbour_caption`: which caption of one retrieved training image a lookup returns (``nearest``, and
  ``image_nearest``, the nearest image in the CNN+LSTM's feature space, :mod:`captioners.nearest`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from aerialdata.captionset import CaptionImage
from llm.consensus import CiderD, document_frequencies
from llm.retrieval import CompositionIndex, consensus_order

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

    Records with scenes (a scene head on the segmenter) are compared by their scenes too: the index appends each
    scene's probability, weighted so that a change of scene counts as much as two unrelated compositions differ
    (:func:`llm.retrieval.scene_weight`); without scenes the features are the composition's alone, as before.
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


def neighbour_caption(captions: Sequence[str]) -> str:
    """The caption a one-neighbour lookup returns of its neighbour's references: the one whose words its siblings
    repeat most (:func:`llm.retrieval.consensus_order`), as :meth:`NearestNeighbour.caption` with ``k=1``."""
    return consensus_order(captions)[0]


def _normal(caption: str) -> str:
    """A caption as its frequency is counted: lowercased, whitespace collapsed (the scorer's tokenizer lowercases)."""
    return " ".join(caption.lower().split())


def most_frequent(captions: Iterable[str]) -> str:
    """The most frequent caption (lowercased, whitespace collapsed); ties: the lexicographically smallest."""
    counts = Counter(_normal(c) for c in captions)
    if not counts:
        raise ValueError("no captions to count")
    return min(counts, key=lambda c: (-counts[c], c))


def class_oracle(train: Iterable[CaptionImage], test: Iterable[CaptionImage]) -> list[str]:
    """For each test image, the most frequent training caption of its true category (:func:`most_frequent`); a
    category without training images gets the most frequent training caption of all."""
    by_class: dict[str, list[str]] = {}
    for it in train:
        by_class.setdefault(it.category, []).extend(it.sentences)
    if not by_class:
        raise ValueError("class_oracle needs at least one training image")
    best = {cat: most_frequent(caps) for cat, caps in by_class.items()}
    fallback = most_frequent(c for caps in by_class.values() for c in caps)
    return [best.get(it.category, fallback) for it in test]


def categories_summary(train: Sequence[CaptionImage], test: Sequence[CaptionImage]) -> dict:
    """What the categories class_oracle reads are: how many, and why they may mean nothing (``degenerate``: every
    image unknown or all in one category, so the oracle is one caption for all; or no category with two training
    images, so it copies one image's caption); None when they are real classes."""
    train_counts = Counter(it.category for it in train)
    cats = set(train_counts) | {it.category for it in test}
    if cats <= {"unknown", ""}:
        degenerate = "no categories (every image is unknown): class_oracle is the most frequent training caption"
    elif len(cats) == 1:
        degenerate = (f"one category ({next(iter(cats))}) for every image: class_oracle is the most frequent "
                      "training caption")
    elif train_counts and max(train_counts.values()) < 2:
        degenerate = ("no category has two training images: class_oracle is the caption of the one training image "
                      "of each category")
    else:
        degenerate = None
    return {"categories": len(cats), "train_images": len(train), "test_images": len(test),
            "test_categories_unseen": sorted({it.category for it in test} - set(train_counts)),
            "degenerate": degenerate}
