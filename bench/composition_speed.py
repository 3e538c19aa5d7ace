"""Composition extraction speed: the product's extractor vs the straightforward per-class reference, in one run.

    python -m bench.composition_speed                 # 224, 512, 1024; prints one JSON object
    python -m bench.composition_speed --sizes 224 --masks 200
    python -m bench.composition_speed --boxes-ab      # one-pass bit-set boxes vs per-class cv2.boundingRect

Masks are procedural aerial-like scenes (seeded): a vegetation background, a road, blobs of water, bare ground and
buildings, a handful of cars and specks of noise, drawn at each size with the same layout scaled (same scene, more
pixels), so masks/s at 224 / 512 / 1024 shows how the cost grows with pixel count. Two variants: "clean" (about 5
classes a mask) and "speckled" (0.1% isolated pixels of random classes, as a noisy segmentation gives: every class
present, with many one-pixel components). Both paths run on one core (OpenCV threads = 1, one process) and are timed
in CPU seconds of this process, which a busy machine disturbs less than wall time; the records they produce are
checked to be identical.

``--boxes-ab`` times :func:`composition.extract.extract` twice over: with its one-pass bit-set bounding boxes and with
the plain per-class ``cv2.boundingRect`` (``bench.reference_extractor.boxes_reference``) swapped in, mask by mask in
alternating order, so both see the same machine state; it prints the gain of the bit sets per size and variant.

The reference is :mod:`bench.reference_extractor`, the one copy the tests certify (``tests/test_composition.py``
imports it from there), so the benchmark runs from an installed package as well as from a checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import cv2
import numpy as np

import composition.extract as extract_module
from aerialdata.classes import load_class_table
from bench.reference_extractor import boxes_reference, extract_reference
from composition.extract import extract


def scene(rng: np.random.Generator, size: int, speckle: float = 0.0) -> np.ndarray:
    """One (size, size) uint8 mask of seed10 group ids; the layout is drawn in [0, 1] units, so it scales."""
    s = size / 224.0
    m = np.full((size, size), 4, np.uint8)  # vegetation
    angle = rng.uniform(0, np.pi)
    c = rng.uniform(0.3, 0.7, 2) * size
    d = np.array([np.cos(angle), np.sin(angle)]) * size
    cv2.line(m, tuple(int(v) for v in c - d), tuple(int(v) for v in c + d), 1, max(1, int(12 * s)))  # road
    for cls, n, rmin, rmax in ((3, 1, 15, 40), (2, 2, 10, 30), (5, 4, 5, 14)):
        for _ in range(rng.integers(0, n + 1)):
            ctr = tuple(int(v) for v in rng.uniform(0, size, 2))
            axes = tuple(int(v * s) for v in rng.uniform(rmin, rmax, 2))
            cv2.ellipse(m, ctr, axes, float(rng.uniform(0, 180)), 0, 360, int(cls), -1)
    for _ in range(rng.integers(2, 9)):  # cars
        x, y = (int(v) for v in rng.uniform(0, size - 6 * s, 2))
        m[y: y + max(1, int(2 * s)), x: x + max(1, int(4 * s))] = 8
    if speckle:  # isolated pixels of any class, as a noisy segmentation gives: every class present, full bboxes
        noise = rng.random((size, size)) < speckle
        m[noise] = rng.integers(0, 10, int(noise.sum()))
    return m


def rate(fn, masks, table) -> float:
    t0 = time.process_time()
    for m in masks:
        fn(m, table)
    return len(masks) / (time.process_time() - t0)


VARIANTS = {"clean": 0.0, "speckled": 0.001}


def main(sizes=(224, 512, 1024), n_masks=(200, 40, 10), repeats: int = 3) -> dict:
    cv2.setNumThreads(1)
    table = load_class_table("seed10")
    rows: dict[str, dict] = {}
    for size, n in zip(sizes, n_masks, strict=True):
        rows[str(size)] = {}
        for variant, speckle in VARIANTS.items():
            rng = np.random.default_rng(size)
            masks = [scene(rng, size, speckle) for _ in range(n)]
            for m in masks[:10]:
                if extract(m, table) != extract_reference(m, table):
                    raise SystemExit(f"fast and reference records differ at size {size} ({variant})")
            fast = max(rate(extract, masks, table) for _ in range(repeats))
            ref = max(rate(extract_reference, masks, table) for _ in range(repeats))
            mp = size * size / 1e6
            rows[str(size)][variant] = {
                "masks": n,
                "mean_classes": round(float(np.mean([len(np.unique(m)) for m in masks])), 1),
                "fast_masks_per_s": round(fast, 1),
                "reference_masks_per_s": round(ref, 1),
                "ratio": round(fast / ref, 2),
                "fast_ms_per_megapixel": round(1000 / fast / mp, 2),
                "reference_ms_per_megapixel": round(1000 / ref / mp, 2),
            }
    first, last = str(sizes[0]), str(sizes[-1])
    linearity = {v: round(rows[last][v]["fast_ms_per_megapixel"] / rows[first][v]["fast_ms_per_megapixel"], 2)
                 for v in VARIANTS}
    return {
        "bench": "composition_speed",
        "timing": "CPU seconds of this process (time.process_time), best of the repeats; one core",
        "sizes": rows,
        f"ms_per_megapixel_{last}_over_{first}": linearity,
        "best_of": repeats,
        "machine": _machine(),
    }


def boxes_ab(sizes=(224, 512, 1024), n_masks=(200, 40, 10), passes: int = 11) -> dict:
    """masks/s of extract() with bit-set boxes and with per-class boxes, interleaved mask by mask, in one process."""
    cv2.setNumThreads(1)
    table = load_class_table("seed10")
    ways = {"bitset": extract_module.boxes, "plain": boxes_reference}

    def seconds(way: str, m: np.ndarray) -> float:
        extract_module.boxes = ways[way]
        t0 = time.process_time()
        extract(m, table)
        return time.process_time() - t0

    rows: dict[str, dict] = {}
    try:
        for size, n in zip(sizes, n_masks, strict=True):
            rows[str(size)] = {}
            for variant, speckle in VARIANTS.items():
                rng = np.random.default_rng(size)
                masks = [scene(rng, size, speckle) for _ in range(n)]
                for way, boxes in ways.items():
                    extract_module.boxes = boxes
                    if any(extract(m, table) != extract_reference(m, table) for m in masks[:10]):
                        raise SystemExit(f"records with {way} boxes differ from the reference at size {size} "
                                         f"({variant})")
                spent = {way: np.zeros(passes) for way in ways}  # (passes,) CPU seconds per way
                for p in range(passes):
                    for i, m in enumerate(masks):
                        for way in (("bitset", "plain") if (i + p) % 2 == 0 else ("plain", "bitset")):
                            spent[way][p] += seconds(way, m)
                gain = 100 * (spent["plain"] / spent["bitset"] - 1)  # (passes,) percent more masks/s with bit sets
                rows[str(size)][variant] = {
                    "bitset_masks_per_s": round(n / spent["bitset"].min(), 1),
                    "plain_masks_per_s": round(n / spent["plain"].min(), 1),
                    "gain_percent_median": round(float(np.median(gain)), 1),
                    "gain_percent_range": [round(float(gain.min()), 1), round(float(gain.max()), 1)],
                }
    finally:
        extract_module.boxes = ways["bitset"]
    return {
        "bench": "composition_boxes_ab",
        "timing": "CPU seconds of this process per mask, both ways interleaved; masks/s best of the passes; "
                  "gain per pass (plain seconds / bit-set seconds - 1), median and range; one core",
        "sizes": rows,
        "passes": passes,
        "machine": _machine(),
    }


def _machine() -> dict:
    try:
        import torch

        torch_threads = torch.get_num_threads()
    except ImportError:  # torch is a dependency, but the bench does not need it
        torch_threads = None
    return {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "opencv_threads": cv2.getNumThreads(), "torch_threads": torch_threads,
            "loadavg_1min": round(os.getloadavg()[0], 2)}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[224, 512, 1024], help="mask side lengths")
    p.add_argument("--masks", type=int, nargs="+", default=None,
                   help="masks per size (default 200 at 224, scaled to about the same pixel count per size)")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed passes per path; the best is reported (default 3, or 11 with --boxes-ab)")
    p.add_argument("--boxes-ab", action="store_true",
                   help="instead: extract() with bit-set boxes vs per-class cv2.boundingRect boxes, interleaved")
    a = p.parse_args()
    counts = a.masks or [max(5, int(200 * (224 / s) ** 2)) for s in a.sizes]
    if len(counts) == 1:
        counts = counts * len(a.sizes)
    if a.boxes_ab:
        print(json.dumps(boxes_ab(tuple(a.sizes), tuple(counts), a.repeats or 11), indent=2))
    else:
        print(json.dumps(main(tuple(a.sizes), tuple(counts), a.repeats or 3), indent=2))
