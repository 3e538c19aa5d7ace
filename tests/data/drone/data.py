#!/usr/bin/env python3
"""Make the tiny drone-format fixture (seeded): 6 photos of 64x48 px with source-id masks, a few KB in all.

Same tree, names, dtypes and id range as the aerial semantic drone dataset:

    original_images/<stem>.jpg, label_images_semantic/<stem>.png (uint8 source ids 0..23), class_dict_seg.csv

Each scene is grass with a paved road, a roof, a pond and a few small cars, drawn in the source classes' colours
plus noise, so a tiny model can learn something in a few steps. Run: python tests/data/drone/data.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent
W, H, N = 64, 48, 6
CLASSES = [
    ("unlabeled", (0, 0, 0)), ("paved-area", (128, 64, 128)), ("dirt", (130, 76, 0)), ("grass", (0, 102, 0)),
    ("gravel", (112, 103, 87)), ("water", (28, 42, 168)), ("rocks", (48, 41, 30)), ("pool", (0, 50, 89)),
    ("vegetation", (107, 142, 35)), ("roof", (70, 70, 70)), ("wall", (102, 102, 156)), ("window", (254, 228, 12)),
    ("door", (254, 148, 12)), ("fence", (190, 153, 153)), ("fence-pole", (153, 153, 153)), ("person", (255, 22, 96)),
    ("dog", (102, 51, 0)), ("car", (9, 143, 150)), ("bicycle", (119, 11, 32)), ("tree", (51, 51, 0)),
    ("bald-tree", (190, 250, 190)), ("ar-marker", (112, 150, 146)), ("obstacle", (2, 135, 115)),
    ("conflicting", (255, 0, 0)),
]
ID = {n: i for i, (n, _) in enumerate(CLASSES)}


def scene(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = np.full((H, W), ID["grass"], np.uint8)
    y = rng.integers(8, H - 8)
    mask[y - 3 : y + 3, :] = ID["paved-area"]                       # a road across
    x0, y0 = rng.integers(2, W // 2 - 14), rng.integers(2, 10)
    mask[y0 : y0 + 12, x0 : x0 + 14] = ID["roof"]                   # a roof above it
    mask[y0 + 12 : y0 + 14, x0 : x0 + 14] = ID["wall"]
    cx, cy = rng.integers(W // 2 + 8, W - 8), rng.integers(H // 2 + 6, H - 6)
    yy, xx = np.mgrid[:H, :W]
    mask[(xx - cx) ** 2 + (yy - cy) ** 2 < 30] = ID["water"]         # a pond
    mask[(xx - cx + 14) ** 2 + (yy - cy) ** 2 < 10] = ID["tree"]
    for _ in range(2):                                              # cars on the road
        cx2 = rng.integers(2, W - 6)
        mask[y - 1 : y + 2, cx2 : cx2 + 4] = ID["car"]
    mask[0, 0] = ID["unlabeled"]
    colors = np.array([c for _, c in CLASSES], np.int16)
    img = colors[mask] + rng.integers(-12, 13, (H, W, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def main() -> None:
    rng = np.random.default_rng(0)
    (ROOT / "original_images").mkdir(exist_ok=True)
    (ROOT / "label_images_semantic").mkdir(exist_ok=True)
    for i in range(N):
        img, mask = scene(rng)
        Image.fromarray(img).save(ROOT / "original_images" / f"{i:03d}.jpg", quality=85)
        Image.fromarray(mask, mode="L").save(ROOT / "label_images_semantic" / f"{i:03d}.png")
    lines = ["name, r, g, b"] + [f"{n}, {r}, {g}, {b}" for n, (r, g, b) in CLASSES]
    (ROOT / "class_dict_seg.csv").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
