#!/usr/bin/env python3
"""Make the tiny generic-folder fixture (seeded): image/mask pairs of 32x24 px and their class map, a few KB.

The layout the folder reader expects, with an image of each common format:

    images/a.jpg, images/b.png, images/c.tif   RGB uint8
    masks/a.png, masks/b.png, masks/c.png      uint8 L class ids 0..3, the ids classes.yaml lists
    classes.yaml                               0 unlabelled (ignore), 1 grass, 2 house, 3 pond (written by hand)

Run: python tests/data/folder/data.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent
W, H = 32, 24
COLOURS = np.array([(0, 0, 0), (60, 140, 50), (190, 80, 60), (40, 70, 150)], np.int16)


def pair(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = np.full((H, W), 1, np.uint8)                         # grass
    x0, y0 = int(rng.integers(1, 12)), int(rng.integers(1, 8))
    mask[y0 : y0 + 8, x0 : x0 + 10] = 2                         # a house
    yy, xx = np.mgrid[:H, :W]
    mask[(xx - 25) ** 2 + (yy - 17) ** 2 < 16] = 3              # a pond
    mask[:2, :4] = 0                                            # an unlabelled corner
    img = COLOURS[mask] + rng.integers(-10, 11, (H, W, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def main() -> None:
    rng = np.random.default_rng(0)
    (ROOT / "images").mkdir(exist_ok=True)
    (ROOT / "masks").mkdir(exist_ok=True)
    for stem, fmt in (("a", "jpg"), ("b", "png"), ("c", "tif")):
        img, mask = pair(rng)
        Image.fromarray(img).save(ROOT / "images" / f"{stem}.{fmt}")
        Image.fromarray(mask, mode="L").save(ROOT / "masks" / f"{stem}.png", optimize=True)


if __name__ == "__main__":
    main()
