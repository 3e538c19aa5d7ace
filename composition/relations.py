"""Spatial relations between classes, top-down: x to the right, y downwards, "above" means a smaller y.

Rules (thresholds in :class:`composition.config.CompositionConfig`, file ``configs/composition.yaml``):

1. Candidates are the record's classes minus ``ignore_in_relations`` (unlabeled), in record order (largest first).
   Dominant: share >= ``dominant_min_percent`` (at most ``max_dominant``); the largest candidate always is.
2. Every candidate but the largest gets one relation, against one *object*: a non-dominant class against a dominant
   class, a dominant class against a larger dominant class. Among those, the object is the one the subject touches
   most *relative to its size*: the share of the subject's ring (a ``ring_pixels`` wide band around it) that the
   object covers, divided by the object's share of the image (a lift > 1 means "borders it more than chance").
   When the subject touches none of them, the object is the one with the nearest centroid.
3. The relation, first match wins:
   - ``surrounded by``: the object covers >= ``surround_share`` of the ring and the subject's bounding box lies
     strictly inside the object's (so a river crossing the image is not "surrounded" by its banks);
   - ``on``: centroids closer than ``on_distance`` (fraction of the longer image side);
   - ``next to``: they touch and the centroids are closer than ``next_to_distance``: adjacent, no clear direction;
   - otherwise the direction from the object's centroid to the subject's, in 8 sectors of 45 degrees:
     right of, above right of, above, above left of, left of, below left of, below, below right of.

A horizontal flip of the mask swaps left and right in every relation and leaves the others unchanged (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from composition.config import CompositionConfig

DIRECTIONS = (
    "right of",
    "above right of",
    "above",
    "above left of",
    "left of",
    "below left of",
    "below",
    "below right of",
)
RELATIONS = (*DIRECTIONS, "on", "surrounded by", "next to")


@dataclass
class ClassStats:
    """Exact pixel measurements of one class (pixel units; the record normalises them).

    ``sum_x``/``sum_y`` are integer sums of column/row indices; ``bbox`` is (x0, y0, x1, y1) with x1/y1 exclusive;
    ``ring`` (K,) counts the classes found in the ring around the class (None when not measured).
    """

    id: int
    count: int
    sum_x: int
    sum_y: int
    bbox: tuple[int, int, int, int]
    regions: int
    largest_area: int
    circle: tuple[float, float, float]  # cx, cy, r in pixel indices (centre of pixel (i, j) is (j, i))
    rect: tuple[float, float]  # side lengths of the largest region's minimum-area rectangle (on pixel centres)
    ring: np.ndarray | None = None

    @property
    def centroid_px(self) -> tuple[float, float]:
        return self.sum_x / self.count, self.sum_y / self.count


def dominant_ids(order: list[int], stats: dict[int, ClassStats], names: list[str], total: int,
                 cfg: CompositionConfig) -> tuple[list[int], list[int]]:
    """(candidates in record order, dominant ids) for ``order`` (class ids, largest first)."""
    cand = [c for c in order if names[c] not in cfg.ignore_in_relations]
    if not cand:
        return [], []
    dom = [c for c in cand if 100.0 * stats[c].count / total >= cfg.dominant_min_percent][: cfg.max_dominant]
    if not dom or dom[0] != cand[0]:
        dom = [cand[0]] + [c for c in dom if c != cand[0]][: cfg.max_dominant - 1]
    return cand, dom


def subjects(order, stats, names, total, cfg) -> list[int]:
    """Classes that get a relation (so whose ring must be measured)."""
    cand, _ = dominant_ids(order, stats, names, total, cfg)
    return cand[1:]


def relations(order: list[int], stats: dict[int, ClassStats], names: list[str], width: int, height: int,
              cfg: CompositionConfig) -> list[dict]:
    """The record's ``relations`` list (one per subject, in record order); see the module docstring."""
    total = width * height
    scale = float(max(width, height))
    cand, dom = dominant_ids(order, stats, names, total, cfg)
    out = []
    for rank, s in enumerate(cand):
        if rank == 0:
            continue
        objects = [o for o in dom if cand.index(o) < rank]
        st = stats[s]
        ring = st.ring
        ring_total = int(ring.sum()) if ring is not None else 0
        sx, sy = st.centroid_px

        def dist(o, sx=sx, sy=sy):
            ox, oy = stats[o].centroid_px
            return math.hypot(sx - ox, sy - oy) / scale

        touching = [o for o in objects if ring_total and ring[o] > 0]
        if touching:
            # lift = (ring share of o) / (image share of o); ties: nearer centroid, then larger class
            obj = max(touching, key=lambda o: (ring[o] * total / (ring_total * stats[o].count), -dist(o),
                                               -cand.index(o)))
        else:
            obj = min(objects, key=lambda o: (dist(o), cand.index(o)))
        out.append({"subject": names[s], "relation": _relation(st, stats[obj], obj, ring, ring_total, dist(obj),
                                                              scale, cfg), "object": names[obj]})
    return out


def _relation(st: ClassStats, ot: ClassStats, obj: int, ring, ring_total: int, d: float, scale: float,
              cfg: CompositionConfig) -> str:
    share = ring[obj] / ring_total if ring_total else 0.0
    sx0, sy0, sx1, sy1 = st.bbox
    ox0, oy0, ox1, oy1 = ot.bbox
    inside = ox0 < sx0 and oy0 < sy0 and ox1 > sx1 and oy1 > sy1
    if share >= cfg.surround_share and inside:
        return "surrounded by"
    if d < cfg.on_distance:
        return "on"
    if share > 0 and d < cfg.next_to_distance:
        return "next to"
    sx, sy = st.centroid_px
    ox, oy = ot.centroid_px
    angle = math.degrees(math.atan2(-(sy - oy), sx - ox))  # y down: a smaller y is "above"
    return DIRECTIONS[round(angle / 45.0) % 8]
