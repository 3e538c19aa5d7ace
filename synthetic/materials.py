"""Materials: what a pixel is made of (its look) and which drone source class it is labelled as.

A scene is drawn once, as a map of material ids; the label mask is a lookup (material -> source id) and the image is
a gather from precomputed texture tiles (material -> tile pixel at a random offset), so drawing costs one cv2 call per
shape and rendering is a few vectorised numpy operations per image.

Tiles are made once per process from a fixed seed (:func:`tiles`), so the same scene always gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from aerialdata.classes import SOURCE_ID

TILE = 256  # texture tile side in pixels; crops wrap around


@dataclass(frozen=True)
class Material:
    name: str
    source: str                 # drone source class it is labelled as
    color: tuple[int, int, int]  # mean RGB
    grain: float = 10.0         # pixel-level noise amplitude
    blotch: float = 12.0        # large-scale noise amplitude
    blotch_scale: int = 24      # size of the large-scale noise in pixels
    pattern: str = ""           # "", "stripes", "speckle", "canopy", "tiles", "waves", "checker"


MATERIALS: tuple[Material, ...] = (
    Material("clutter", "unlabeled", (120, 110, 100), 30, 25, 6, "speckle"),
    Material("asphalt", "paved-area", (88, 88, 92), 8, 6, 40),
    Material("concrete", "paved-area", (168, 166, 160), 8, 8, 32),
    Material("pavers", "paved-area", (150, 130, 120), 10, 8, 16, "tiles"),
    Material("track", "paved-area", (178, 84, 64), 8, 6, 32),
    Material("marking", "paved-area", (225, 225, 215), 6, 3, 32),
    Material("dirt", "dirt", (140, 108, 72), 12, 18, 28),
    Material("sand", "dirt", (198, 176, 128), 9, 10, 40),
    Material("plough", "dirt", (120, 88, 58), 10, 10, 24, "stripes"),
    Material("grass", "grass", (96, 142, 60), 12, 16, 24),
    Material("grass_dry", "grass", (132, 148, 78), 12, 16, 24),
    Material("lawn", "grass", (74, 150, 62), 6, 8, 48, "stripes"),
    Material("gravel", "gravel", (150, 142, 128), 22, 8, 16, "speckle"),
    Material("water", "water", (46, 76, 104), 4, 8, 48, "waves"),
    Material("water_green", "water", (62, 92, 78), 4, 8, 48, "waves"),
    Material("sea", "water", (38, 92, 132), 4, 10, 64, "waves"),
    Material("foam", "water", (190, 205, 210), 14, 10, 8),
    Material("rocks", "rocks", (104, 98, 92), 26, 20, 6, "speckle"),
    Material("pool", "pool", (60, 170, 200), 5, 6, 32, "waves"),
    Material("shrub", "vegetation", (70, 100, 44), 16, 14, 10, "speckle"),
    Material("crop", "vegetation", (110, 150, 60), 8, 10, 32, "stripes"),
    Material("crop_yellow", "vegetation", (190, 172, 96), 8, 10, 32, "stripes"),
    Material("crop_dark", "vegetation", (66, 110, 52), 8, 10, 32, "stripes"),
    Material("roof_red", "roof", (168, 84, 62), 6, 6, 32, "tiles"),
    Material("roof_grey", "roof", (120, 118, 120), 5, 5, 32, "tiles"),
    Material("roof_dark", "roof", (72, 70, 76), 5, 5, 32),
    Material("roof_white", "roof", (214, 212, 206), 4, 4, 32),
    Material("roof_brown", "roof", (132, 96, 70), 6, 6, 32, "tiles"),
    Material("roof_metal", "roof", (176, 182, 188), 4, 4, 40, "stripes"),
    Material("roof_blue", "roof", (88, 118, 160), 4, 4, 40, "stripes"),
    Material("wall", "wall", (150, 146, 150), 6, 4, 32),
    Material("window", "window", (40, 56, 80), 5, 3, 32),
    Material("door", "door", (96, 64, 40), 5, 3, 32),
    Material("fence", "fence", (176, 160, 136), 8, 4, 32),
    Material("fence_pole", "fence-pole", (70, 70, 70), 6, 3, 32),
    Material("person_a", "person", (200, 60, 60), 20, 6, 8),
    Material("person_b", "person", (40, 70, 160), 20, 6, 8),
    Material("person_c", "person", (220, 210, 190), 20, 6, 8),
    Material("dog", "dog", (120, 80, 40), 14, 6, 8),
    Material("car_white", "car", (222, 222, 224), 6, 4, 32),
    Material("car_black", "car", (36, 38, 44), 6, 4, 32),
    Material("car_red", "car", (176, 36, 36), 6, 4, 32),
    Material("car_blue", "car", (44, 70, 150), 6, 4, 32),
    Material("car_silver", "car", (160, 164, 170), 6, 4, 32),
    Material("glass", "car", (30, 36, 46), 4, 2, 32),
    Material("bicycle", "bicycle", (30, 30, 30), 30, 4, 8, "speckle"),
    Material("tree", "tree", (52, 86, 40), 18, 14, 6, "canopy"),
    Material("tree_light", "tree", (82, 118, 50), 18, 14, 6, "canopy"),
    Material("conifer", "tree", (36, 64, 40), 16, 10, 6, "canopy"),
    Material("bald_tree", "bald-tree", (118, 104, 90), 24, 10, 4, "speckle"),
    Material("ar_marker", "ar-marker", (128, 128, 128), 4, 2, 32, "checker"),
    Material("obstacle", "obstacle", (214, 120, 40), 10, 6, 16),
    Material("obstacle_grey", "obstacle", (100, 106, 110), 10, 6, 16),
)

MAT: dict[str, int] = {m.name: i for i, m in enumerate(MATERIALS)}
NUM_MATERIALS = len(MATERIALS)
# material id -> drone source id (the label mask is MAT2SOURCE[material_map])
MAT2SOURCE = np.zeros(256, dtype=np.uint8)
for _i, _m in enumerate(MATERIALS):
    MAT2SOURCE[_i] = SOURCE_ID[_m.source]

# objects that cast shadows: tall ones (buildings, trees) and low ones (cars, people, fences, obstacles)
TALL = np.zeros(256, dtype=np.uint8)
LOW = np.zeros(256, dtype=np.uint8)
for _i, _m in enumerate(MATERIALS):
    if _m.source in ("roof", "wall", "window", "door", "tree", "bald-tree"):
        TALL[_i] = 1
    elif _m.source in ("car", "person", "dog", "bicycle", "obstacle", "fence", "fence-pole"):
        LOW[_i] = 1

ROOFS = ("roof_red", "roof_grey", "roof_dark", "roof_white", "roof_brown")
CARS = ("car_white", "car_black", "car_red", "car_blue", "car_silver", "car_white", "car_silver")
PEOPLE = ("person_a", "person_b", "person_c")


def _smooth_noise(rng: np.random.Generator, scale: int) -> np.ndarray:
    """(TILE, TILE) float32 noise in about [-1, 1] with features about ``scale`` pixels wide, tileable."""
    n = max(2, TILE // max(scale, 1))
    small = rng.standard_normal((n, n)).astype(np.float32)
    small = np.pad(small, 1, mode="wrap")  # wrap so the tile repeats without a seam
    big = cv2.resize(small, (TILE + 2 * TILE // n, TILE + 2 * TILE // n), interpolation=cv2.INTER_CUBIC)
    o = TILE // n
    return big[o : o + TILE, o : o + TILE] / 1.2


def _tile(m: Material, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:TILE, 0:TILE].astype(np.float32)
    lum = m.blotch * _smooth_noise(rng, m.blotch_scale) + m.blotch * 0.5 * _smooth_noise(rng, m.blotch_scale // 3 + 2)
    lum += m.grain * rng.standard_normal((TILE, TILE)).astype(np.float32) * 0.6
    if m.pattern == "stripes":  # crop rows, lawn mowing stripes, corrugated roofs
        period = 6 if m.source != "grass" else 24
        lum += 0.8 * m.blotch * np.sign(np.sin(2 * np.pi * xx / period))
    elif m.pattern == "tiles":
        lum += 0.6 * m.blotch * ((yy % 4) < 1)
    elif m.pattern == "waves":
        lum += 0.5 * m.blotch * np.sin(2 * np.pi * (yy + 3 * _smooth_noise(rng, 32)) / 9)
    elif m.pattern == "canopy":  # clumps of foliage with dark gaps
        clumps = _smooth_noise(rng, 5)
        lum += 1.6 * m.blotch * clumps - 0.8 * m.blotch * (clumps < -0.6)
    elif m.pattern == "speckle":
        lum += m.grain * 0.8 * (rng.random((TILE, TILE)) < 0.15) * rng.standard_normal((TILE, TILE))
    elif m.pattern == "checker":  # ar-marker: black and white squares
        lum += 110 * np.sign(np.sin(np.pi * xx / 3) * np.sin(np.pi * yy / 3))
    hue = _smooth_noise(rng, m.blotch_scale * 2)[..., None] * np.array([3.0, -2.0, 2.0], np.float32)
    rgb = np.array(m.color, np.float32)[None, None, :] + lum[..., None] + hue
    return np.clip(rgb, 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def tiles() -> np.ndarray:
    """(NUM_MATERIALS, TILE, TILE, 3) uint8 texture tiles, identical in every process (fixed seed)."""
    rng = np.random.default_rng(20240607)
    return np.stack([_tile(m, rng) for m in MATERIALS])


@lru_cache(maxsize=8)
def canopy_shade(px_per_m: float) -> np.ndarray:
    """(TILE, TILE) uint8 shading of a closed canopy: overlapping lit crowns 2.5..5 m across, tileable."""
    rng = np.random.default_rng(7)
    out = np.full((TILE, TILE), 70, np.uint8)
    n = int(TILE * TILE / (px_per_m**2 * 9)) + 1
    for _ in range(n):
        x, y = rng.uniform(0, TILE, 2)
        r = rng.uniform(2.0, 4.5) * px_per_m
        v = int(rng.integers(100, 140))
        for dx in (-TILE, 0, TILE):
            for dy in (-TILE, 0, TILE):
                if -r < x + dx < TILE + r and -r < y + dy < TILE + r:
                    c = (int(x + dx), int(y + dy))
                    cv2.circle(out, c, max(int(r), 1), v, -1)
                    cv2.circle(out, (int(c[0] - r * 0.25), int(c[1] - r * 0.25)), max(int(r * 0.5), 1), v + 20, -1)
    return out
