"""The facts a caption may state, measured on the finished label mask (never taken from the layout's intentions).

Everything here is recoverable from the mask by the composition step (class percentages, region counts, centroids,
3x3 positions, elongation), so a model that reads a composition can learn to say it::

    facts = scene_facts(label, category="pond", px_per_m=1.0)
    facts["counts"]["building"], facts["cells"]["water"], facts["water"]["elongation"]
"""

from __future__ import annotations

import cv2
import numpy as np

from aerialdata.classes import SOURCE_ID, SOURCE_NAMES

CELLS = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom", "bottom right")

# things a caption counts or places, as sets of source classes, with the smallest region (square metres) that counts
THINGS: dict[str, tuple[tuple[str, ...], float]] = {
    "building": (("roof",), 20.0),
    "car": (("car",), 2.0),
    "tree": (("tree",), 3.0),
    "pool": (("pool",), 6.0),
    "water": (("water",), 40.0),
    "road": (("paved-area",), 10.0),
    "grass": (("grass",), 40.0),
    "field": (("vegetation",), 150.0),
    "bare": (("dirt", "gravel", "rocks"), 40.0),
}


def _ids(names: tuple[str, ...]) -> list[int]:
    return [SOURCE_ID[n] for n in names]


def cell_of(x: float, y: float) -> str:
    """3x3 cell name of a normalised point (x right, y down)."""
    col = 0 if x < 1 / 3 else (2 if x > 2 / 3 else 1)
    row = 0 if y < 1 / 3 else (2 if y > 2 / 3 else 1)
    return CELLS[row * 3 + col]


def elongation(region: np.ndarray) -> float:
    """Length over width of the minimum-area rectangle around a boolean region (1 = compact)."""
    pts = cv2.findNonZero(region.astype(np.uint8))
    if pts is None:
        return 1.0
    (_, _), (w, h), _ = cv2.minAreaRect(pts)
    w, h = max(w, 1.0), max(h, 1.0)
    return float(max(w, h) / min(w, h))


def scene_facts(label: np.ndarray, category: str, px_per_m: float) -> dict:
    """Measure what a caption may say about a scene: present classes, counts, positions, water shape.

    Args:
        label: (H, W) uint8 mask of drone source ids.
        category: the scene's category (kept in the record).
        px_per_m: ground resolution, to turn minimum object sizes in square metres into pixels.
    """
    h, w = label.shape
    hist = np.bincount(label.ravel(), minlength=256)[: len(SOURCE_NAMES)].astype(np.float64) / label.size
    percent = {SOURCE_NAMES[i]: round(100 * float(v), 2) for i, v in enumerate(hist) if v > 0}
    counts: dict[str, int] = {}
    cells: dict[str, str] = {}
    comps: dict[str, tuple] = {}
    for thing, (sources, min_m2) in THINGS.items():
        if not any(hist[i] for i in _ids(sources)):
            continue
        lut = np.zeros(256, np.uint8)
        lut[_ids(sources)] = 1
        region = lut[label]
        n, lab, stats, cent = cv2.connectedComponentsWithStats(region, connectivity=8)
        area = stats[1:, cv2.CC_STAT_AREA]
        big = area >= min_m2 * px_per_m**2
        if big.sum() == 0:
            continue
        counts[thing] = int(big.sum())
        cx, cy = (cent[1:] * area[:, None]).sum(0) / area.sum()  # centroid of all the thing's pixels
        cells[thing] = cell_of(float(cx) / w, float(cy) / h)
        comps[thing] = (lab, stats, cent)
    facts: dict = {"category": category, "percent": percent, "counts": counts, "cells": cells}
    if "water" in counts:
        lab, stats, cent = comps["water"]
        k = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        region = lab == k
        x0, y0, bw, bh = stats[k, :4]
        facts["water"] = {
            "percent": round(100 * float(stats[k, cv2.CC_STAT_AREA]) / label.size, 2),
            "elongation": round(elongation(region), 2),
            "cell": cell_of(cent[k][0] / w, cent[k][1] / h),
            # which borders the largest water body touches: a river crosses the scene, a sea fills one side
            "touches": [s for s, t in (("left", x0 == 0), ("top", y0 == 0), ("right", x0 + bw == w),
                                       ("bottom", y0 + bh == h)) if t],
            "spans": "horizontal" if bw >= 0.9 * w and bh < 0.9 * h else (
                "vertical" if bh >= 0.9 * h and bw < 0.9 * w else ("both" if bw >= 0.9 * w else "none")),
        }
        ring = cv2.dilate(region.view(np.uint8), np.ones((9, 9), np.uint8), iterations=max(1, int(2 * px_per_m))) > 0
        ring &= ~region
        inside = ring.sum()
        green_lut = np.zeros(256, bool)
        green_lut[_ids(("grass", "vegetation", "tree", "bald-tree"))] = True
        green = green_lut[label[ring]].sum()
        facts["water"]["green_around"] = round(float(green / inside) if inside else 0.0, 2)
    return facts


def present(facts: dict, source: str, min_percent: float = 0.05) -> bool:
    """Whether a source class covers at least ``min_percent`` of the scene."""
    return facts["percent"].get(source, 0.0) >= min_percent
