#!/usr/bin/env python3
"""Make the tiny LoveDA-format fixture (seeded): 32x32 tiles in LoveDA's published tree, a few KB in all.

Same tree, names, dtypes and id range as LoveDA (https://zenodo.org/records/5706578):

    Train/{Urban,Rural}/images_png/<n>.png   RGB uint8
    Train/{Urban,Rural}/masks_png/<n>.png    uint8 L: 0 no-data, 1 background, 2 building, 3 road, 4 water,
    Val/{Urban,Rural}/...                                 5 barren, 6 forest, 7 agriculture
    Test/Rural/images_png/<n>.png            no masks, as published

Tile numbers follow LoveDA's numbering (Train Rural from 0, Train Urban from 1366, Val Rural from 2522, Val Urban
from 3514, Test from 4191). Each tile holds every class: a no-data strip, background, a road, a building, a pond,
barren ground, forest and fields, drawn in plausible colours plus noise. Run: python tests/data/loveda/data.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent
S = 32
COLOURS = np.array([(0, 0, 0), (150, 140, 120), (200, 90, 70), (110, 110, 110), (30, 60, 140), (170, 150, 110),
                    (30, 90, 40), (120, 160, 60)], np.int16)
TILES = [("Train", "Rural", 0), ("Train", "Rural", 1), ("Train", "Urban", 1366), ("Val", "Rural", 2522),
         ("Val", "Urban", 3514)]
TEST = [("Test", "Rural", 4191)]


def tile(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = np.full((S, S), 7, np.uint8)                        # agriculture
    mask[: S // 3, S // 2 :] = 6                               # forest
    mask[S // 3 : S // 2, : S // 3] = 5                        # barren
    y = int(rng.integers(12, 20))
    mask[y : y + 3, :] = 3                                     # a road across
    x0 = int(rng.integers(2, 12))
    mask[2:9, x0 : x0 + 7] = 2                                 # a building
    yy, xx = np.mgrid[:S, :S]
    cx, cy = int(rng.integers(20, 28)), int(rng.integers(24, 28))
    mask[(xx - cx) ** 2 + (yy - cy) ** 2 < 10] = 4             # a pond
    mask[S - 6 :, :5] = 1                                      # background
    mask[:, S - 2 :] = 0                                       # no-data strip at the edge
    img = COLOURS[mask] + rng.integers(-10, 11, (S, S, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def main() -> None:
    rng = np.random.default_rng(0)
    for split, scene, n in TILES + TEST:
        img, mask = tile(rng)
        d = ROOT / split / scene
        (d / "images_png").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / "images_png" / f"{n}.png", optimize=True)
        if split != "Test":
            (d / "masks_png").mkdir(exist_ok=True)
            Image.fromarray(mask, mode="L").save(d / "masks_png" / f"{n}.png", optimize=True)


if __name__ == "__main__":
    main()
