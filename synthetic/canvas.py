"""A canvas in metres: shapes are drawn once as material ids (plus a shading layer), then rendered to RGB.

Coordinates are metres in the scene, x to the right and y downwards; ``px_per_m`` sets the ground resolution, so
the same layout drawn at a finer resolution (the drone set) shows the same objects larger in pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from synthetic.materials import LOW, MAT, MAT2SOURCE, NUM_MATERIALS, TALL, TILE, canopy_shade, tiles

SHIFT = 3  # cv2 sub-pixel bits: coordinates are drawn with 1/8 pixel precision
_ONE = 1 << SHIFT
FLAT = 128  # shading value for "no change" (shade / 128 multiplies the texture)


class Canvas:
    """Material map + shading map of ``width`` x ``height`` pixels covering ``width/px_per_m`` metres."""

    def __init__(self, width: int, height: int, px_per_m: float, background: str):
        self.width, self.height, self.s = int(width), int(height), float(px_per_m)
        self.mat = np.full((self.height, self.width), MAT[background], dtype=np.uint8)
        self.shade = np.full((self.height, self.width), FLAT, dtype=np.uint8)
        self.sun = np.array([1.0, 0.0])  # unit vector along which shadows fall (set by the painter)

    # ---------------------------------------------------------------- geometry in metres
    @property
    def w(self) -> float:
        """Scene width in metres."""
        return self.width / self.s

    @property
    def h(self) -> float:
        """Scene height in metres."""
        return self.height / self.s

    def _pts(self, pts) -> np.ndarray:
        return np.rint(np.asarray(pts, np.float64) * (self.s * _ONE)).astype(np.int32).reshape(-1, 1, 2)

    def _px(self, v: float, minimum: float = 1.0) -> int:
        return max(int(round(v * self.s)), int(minimum))

    # ---------------------------------------------------------------- primitives
    def poly(self, pts, material: str, shade: int = FLAT) -> None:
        p = [self._pts(pts)]
        cv2.fillPoly(self.mat, p, MAT[material], cv2.LINE_8, SHIFT)
        cv2.fillPoly(self.shade, p, shade, cv2.LINE_8, SHIFT)

    def poly_on(self, pts, material: str, on: np.ndarray, shade: int = FLAT) -> None:
        """A polygon painted only over pixels whose current material ``on`` ((256,) bool by material id) allows."""
        tmp = np.zeros_like(self.mat)
        cv2.fillPoly(tmp, [self._pts(pts)], 1, cv2.LINE_8, SHIFT)
        where = (tmp == 1) & on[self.mat]
        self.mat[where] = MAT[material]
        self.shade[where] = shade

    def convex(self, pts, material: str, shade: int = FLAT) -> None:
        """A convex polygon (faster than :meth:`poly`); ``pts`` in metres."""
        p = self._pts(pts)
        cv2.fillConvexPoly(self.mat, p, MAT[material], cv2.LINE_8, SHIFT)
        cv2.fillConvexPoly(self.shade, p, shade, cv2.LINE_8, SHIFT)

    def polys(self, polys: np.ndarray, material: str, shade: int = FLAT) -> None:
        """Many polygons that do not overlap, in one call: (K, V, 2) metres (overlaps would cancel out)."""
        if len(polys):
            p = list(np.rint(np.asarray(polys) * (self.s * _ONE)).astype(np.int32))
            cv2.fillPoly(self.mat, p, MAT[material], cv2.LINE_8, SHIFT)
            cv2.fillPoly(self.shade, p, shade, cv2.LINE_8, SHIFT)

    def shadow(self, pts, strength: int = 70) -> None:
        """Darken the shading under a polygon (the label is unchanged: a shadow is not a class)."""
        cv2.fillPoly(self.shade, [self._pts(pts)], strength, cv2.LINE_8, SHIFT)

    def circle(self, cx: float, cy: float, r: float, material: str, shade: int = FLAT, min_px: float = 1.0) -> None:
        c = (int(round(cx * self.s * _ONE)), int(round(cy * self.s * _ONE)))
        rr = max(int(round(r * self.s * _ONE)), int(min_px * _ONE / 2))
        cv2.circle(self.mat, c, rr, MAT[material], -1, cv2.LINE_8, SHIFT)
        cv2.circle(self.shade, c, rr, shade, -1, cv2.LINE_8, SHIFT)

    def shadow_circle(self, cx: float, cy: float, r: float, strength: int = 70) -> None:
        c = (int(round(cx * self.s * _ONE)), int(round(cy * self.s * _ONE)))
        cv2.circle(self.shade, c, max(int(round(r * self.s * _ONE)), 1), strength, -1, cv2.LINE_8, SHIFT)

    def line(self, pts, width_m: float, material: str, shade: int = FLAT, min_px: float = 1.0) -> None:
        """A polyline of ``width_m`` metres (roads, rivers, paths, fences); at least ``min_px`` pixels wide."""
        p = [np.round(np.asarray(pts, np.float64) * self.s * _ONE).astype(np.int32).reshape(-1, 1, 2)]
        t = self._px(width_m, min_px)
        cv2.polylines(self.mat, p, False, MAT[material], t, cv2.LINE_8, SHIFT)
        cv2.polylines(self.shade, p, False, shade, t, cv2.LINE_8, SHIFT)

    def rect(self, cx, cy, w, h, angle, material: str, shade: int = FLAT, min_px: float = 1.0) -> np.ndarray:
        """A rotated rectangle (centre, size in metres, angle in degrees); returns its 4 corners in metres."""
        w = max(w, min_px / self.s)
        h = max(h, min_px / self.s)
        box = cv2.boxPoints(((cx, cy), (w, h), angle))
        self.convex(box, material, shade)
        return box

    def fill_where(self, region: np.ndarray, material: str) -> None:
        self.mat[region] = MAT[material]
        self.shade[region] = FLAT

    def canopy(self, region: np.ndarray, species: np.ndarray, rng: np.random.Generator) -> None:
        """Closed tree canopy over ``region`` (bool): materials from ``species`` (uint8 material ids),
        crowns from a precomputed shading tile at this resolution, cropped at a random offset."""
        tile = canopy_shade(round(self.s, 2))
        # crowns are lit on the side away from the shadows: flip the tile to match this scene's sun
        tile = tile[:: -1 if self.sun[1] < 0 else 1, :: -1 if self.sun[0] < 0 else 1]
        oy, ox = rng.integers(0, TILE, 2)
        yy = (np.arange(self.height)[:, None] + oy) % TILE
        xx = (np.arange(self.width)[None, :] + ox) % TILE
        self.mat[region] = species[region]
        self.shade[region] = tile[yy, xx][region]

    def _shadow_of(self, lut: np.ndarray, length_m: float) -> np.ndarray:
        """Pixels shaded by the objects ``lut`` marks: their footprint swept ``length_m`` metres along the sun."""
        obj = lut[self.mat]
        out = np.zeros_like(obj)
        steps = max(1, min(4, int(length_m * self.s / 2)))
        for k in range(1, steps + 1):
            dx, dy = (self.sun * length_m * self.s * k / steps).round().astype(int)
            h, w = obj.shape
            ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            out[yd, xd] |= obj[ys, xs]
        return out.astype(bool) & ~obj.astype(bool)

    # ---------------------------------------------------------------- output
    def label(self) -> np.ndarray:
        """(H, W) uint8 drone source ids."""
        return MAT2SOURCE[self.mat]

    def render(self, rng: np.random.Generator, blur: float = 0.6) -> np.ndarray:
        """(H, W, 3) uint8 RGB: textures at random offsets, per-material colour jitter, shading, light blur."""
        t = tiles().reshape(-1, 3)  # (materials * TILE * TILE, 3)
        ox = rng.integers(0, TILE, NUM_MATERIALS).astype(np.int32)
        oy = rng.integers(0, TILE, NUM_MATERIALS).astype(np.int32)
        mat = self.mat.astype(np.int32)
        yy = (np.arange(self.height, dtype=np.int32)[:, None] + oy[mat]) % TILE
        xx = (np.arange(self.width, dtype=np.int32)[None, :] + ox[mat]) % TILE
        img = np.take(t, (mat * TILE + yy) * TILE + xx, axis=0).astype(np.float32)  # (H, W, 3) texture crops
        tint = rng.uniform(0.9, 1.1, (NUM_MATERIALS, 3)).astype(np.float32)
        tint *= rng.uniform(0.85, 1.12, (NUM_MATERIALS, 1)).astype(np.float32)
        tint *= rng.uniform(0.92, 1.08, 3).astype(np.float32)  # the whole scene's colour balance
        shade = self.shade.astype(np.float32) * (1.0 / FLAT)
        shade[self._shadow_of(TALL, 3.0)] *= 0.62  # buildings and trees cast shadows, cars and people short ones
        shade[self._shadow_of(LOW, 0.6)] *= 0.7
        img *= shade[..., None]
        img *= np.take(tint, mat, axis=0)
        img += rng.uniform(-10, 10)
        out = np.clip(img, 0, 255).astype(np.uint8)
        if blur > 0:
            out = cv2.GaussianBlur(out, (0, 0), blur)
        return out
