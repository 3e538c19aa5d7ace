"""A composition record as a fixed-length numeric vector, for the nearest-neighbour caption baseline.

    from composition.features import vector, feature_names
    X = np.stack([vector(r, table.num_classes) for r in records])   # (n, num_classes * 6)

Per class id, in id order, :data:`PER_CLASS` features (all zero for an absent class):
percent / 100, log1p(regions), centroid x, centroid y, log(elongation) (0 = compact), radius.

Scenes (``segcap.composition/2`` records of a segmenter with a scene head) are a separate vector,
:func:`scene_vector`: one probability per scene name of a fixed list (:func:`scene_names` of the training records),
0 for a scene the record does not list. :class:`llm.retrieval.CompositionIndex` appends it, weighted.
"""

from __future__ import annotations

import math

import numpy as np

from segcap.errors import DataError

PER_CLASS = ("share", "log_regions", "centroid_x", "centroid_y", "log_elongation", "radius")


def feature_names(names: list[str]) -> list[str]:
    """Column names of :func:`vector` for a class table's names."""
    return [f"{n}:{f}" for n in names for f in PER_CLASS]


def vector(record: dict, num_classes: int) -> np.ndarray:
    """(num_classes * 6,) float32 features of ``record`` (see the module docstring)."""
    out = np.zeros((num_classes, len(PER_CLASS)), np.float32)
    for c in record["classes"]:
        i = c["id"]
        if not 0 <= i < num_classes:
            raise DataError(f"{record.get('image', 'record')}: class id {i} outside 0..{num_classes - 1}; "
                            "the compositions were made with another class table")
        out[i] = (c["percent"] / 100.0, math.log1p(c["regions"]), c["centroid"][0], c["centroid"][1],
                  math.log(max(c["elongation"], 1.0)), c["radius"])
    return out.ravel()


def scene_names(records) -> list[str]:
    """Every scene name the records list, sorted (empty when none has scenes)."""
    return sorted({s["name"] for r in records for s in r.get("scenes") or []})


def scene_vector(record: dict, names: list[str]) -> np.ndarray:
    """(len(names),) float32: the record's probability of each scene of ``names`` (0 for one it does not list, all 0
    for a record without scenes; a scene outside ``names`` is left out)."""
    where = {n: i for i, n in enumerate(names)}
    out = np.zeros(len(names), np.float32)
    for s in record.get("scenes") or []:
        if s["name"] in where:
            out[where[s["name"]]] = s["probability"]
    return out
