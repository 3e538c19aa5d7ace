"""The straightforward composition extractor that :func:`composition.extract.extract` is tested against.

Per class: a boolean mask over the whole image, ``np.where`` for the pixels, OpenCV's connected-component statistics,
a dilation of the whole image for the ring. It shares only the record assembly with the product (percent rounding,
order, relations) and the two conventions OpenCV's fits need to give the same numbers (:func:`_hull`'s start vertex,
:func:`_largest`'s tie order). ``bench.composition_speed`` times the product against it and checks the records agree.
It lives in ``bench`` (``tests/test_composition.py`` imports it from here) so that the benchmark runs from an
installed package too.
"""

from __future__ import annotations

import cv2
import numpy as np

from aerialdata.classes import ClassTable
from composition.config import CompositionConfig
from composition.extract import _hull, _largest, _order, _record, check_mask
from composition.relations import ClassStats, subjects


def boxes_reference(m: np.ndarray, num_classes: int) -> dict[int, tuple[int, int, int, int]]:
    """{class id: (x0, y0, x1, y1)} of every class present: one ``cv2.boundingRect`` per class.

    The plain alternative to :func:`composition.extract.boxes`; ``python -m bench.composition_speed --boxes-ab``
    times the two inside :func:`composition.extract.extract`.
    """
    out = {}
    for c in range(int(m.max()) + 1):
        x, y, w, h = cv2.boundingRect((m == c).view(np.uint8))
        if w:
            out[c] = (x, y, x + w, y + h)
    return out


def measure_reference(m: np.ndarray, num_classes: int, cfg: CompositionConfig) -> dict[int, ClassStats]:
    """Per-class measurements over the whole image (ring not yet filled in)."""
    out = {}
    for c in range(num_classes):
        bm = m == c
        if not bm.any():
            continue
        ys, xs = np.where(bm)
        _, labels, st, _ = cv2.connectedComponentsWithStats(bm.astype(np.uint8), connectivity=8)
        areas = st[1:, cv2.CC_STAT_AREA]
        k = _largest(st)
        pts = np.stack([xs, ys], axis=1).astype(np.int32)
        (cx, cy), radius = cv2.minEnclosingCircle(_hull(pts))
        ky, kx = np.where(labels == k)
        _, (rw, rh), _ = cv2.minAreaRect(_hull(np.stack([kx, ky], axis=1).astype(np.int32)))
        out[c] = ClassStats(c, len(xs), int(xs.sum()), int(ys.sum()),
                            (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1),
                            max(1, int((areas >= cfg.min_region_pixels).sum())), int(areas[k - 1]),
                            (cx, cy, radius), (rw, rh))
    return out


def ring_reference(m: np.ndarray, c: int, r: int, num_classes: int) -> np.ndarray:
    """(K,) class counts in the ``r``-pixel ring around class ``c``: its square dilation minus the class."""
    bm = m == c
    dil = cv2.dilate(bm.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)
    return np.bincount(m[dil & ~bm], minlength=num_classes).astype(np.int64)


def extract_reference(mask, table: ClassTable, image: str = "x.jpg", cfg: CompositionConfig | None = None) -> dict:
    """The record :func:`composition.extract.extract` must give for ``mask``, measured the straightforward way."""
    cfg = cfg or CompositionConfig()
    m = check_mask(mask, table.num_classes, image)
    stats = measure_reference(m, table.num_classes, cfg)
    order, tenths = _order(stats, m.size)
    for s in subjects(order, stats, table.names, m.size, cfg):
        stats[s].ring = ring_reference(m, s, cfg.ring_pixels, table.num_classes)
    return _record(stats, order, tenths, table, m.shape, image, cfg)
