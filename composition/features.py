"""A composition record as a fixed-length numeric vector, for the nearest-neighbour caption baseline.

    from composition.features import vector, feature_names
    X = np.stack([vector(r, table.num_classes) for r in records])   # (n, num_classes * 6)

Per class id, in id order, :data:`PER_CLASS` features (all zero for an absent class):
percent / 100, log1p(regions), centroid x, centroid y, log(elongation) (0 = compact), radius.
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
