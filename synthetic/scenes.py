"""Procedural top-down scenes: one layout function per category, drawn in metres on a :class:`Canvas`.

Each layout follows the look of its RSICD category (a pond is a blob ringed by trees, a river a long band, a dense
residential area rows of roofs along a road grid, a parking lot rows of cars on asphalt...). Sizes are in metres, so
the same layout drawn at a finer ground resolution (the drone set) shows the same objects larger in pixels.
:func:`drone_extras` adds what only a low-flying drone sees (people, dogs, bicycles, ar-markers, obstacles, fence
poles, windows and doors) so every source class of the drone dataset appears in the drone set.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from synthetic.canvas import FLAT, Canvas
from synthetic.materials import CARS, MAT, PEOPLE, ROOFS


def choose(rng: np.random.Generator, options) -> str:
    """One of ``options`` (much faster than ``rng.choice``, which builds an array each call)."""
    return options[int(rng.integers(0, len(options)))]


class Painter:
    """Object drawing helpers shared by the layouts: houses, trees, cars, roads, blobs, with one sun direction."""

    def __init__(self, cv: Canvas, rng: np.random.Generator):
        self.cv, self.rng = cv, rng
        a = rng.uniform(0, 2 * math.pi)
        self.sun = np.array([math.cos(a), math.sin(a)])  # shadows fall along this unit vector
        cv.sun = self.sun
        b = rng.uniform(0, 2 * math.pi)
        self.lean = np.array([math.cos(b), math.sin(b)])  # the side of buildings the camera sees (wall strip)
        self.boxes: list[tuple[float, float, float]] = []  # (cx, cy, radius) of placed buildings, to avoid overlap

    # ------------------------------------------------------------------ placement
    def free(self, cx: float, cy: float, r: float) -> bool:
        return all((cx - x) ** 2 + (cy - y) ** 2 > (r + rr) ** 2 for x, y, rr in self.boxes)

    # ------------------------------------------------------------------ objects
    def house(self, cx, cy, w, h, angle, roof: str | None = None) -> None:
        """A building seen from above: a wall strip on the side the camera sees, a two-sided roof, and at drone
        resolution windows and a door along the wall. Its shadow is cast at render time."""
        cv, rng = self.cv, self.rng
        roof = roof or ROOFS[int(rng.integers(0, len(ROOFS)))]
        a = math.radians(angle)
        u = np.array([math.cos(a), math.sin(a)]) * (w / 2)  # half the long axis
        v = np.array([-math.sin(a), math.cos(a)]) * (h / 2)
        c = np.array([cx, cy])
        box = np.array([c - u - v, c + u - v, c + u + v, c - u + v])
        lean = self.lean * min(max(0.12 * min(w, h), 1.0), 2.5)
        roof_box = box - lean
        pts = cv._pts(np.concatenate([box, roof_box]))
        wall = cv2.convexHull(pts)
        cv2.fillConvexPoly(cv.mat, wall, MAT["wall"], cv2.LINE_8, 3)
        cv2.fillConvexPoly(cv.shade, wall, 96, cv2.LINE_8, 3)
        if cv.s >= 2 and min(w, h) > 5:  # windows and a door on the visible walls
            self._openings(box, lean, angle)
        cv.convex(roof_box, roof, 118)
        if rng.random() < 0.75:  # gable roof: the half facing the sun is lighter
            half = (roof_box[:2] + roof_box[[3, 2]]) / 2 if w >= h else (roof_box[[0, 3]] + roof_box[[1, 2]]) / 2
            lit = roof_box[[0, 1]] if w >= h else roof_box[[0, 3]]
            if w >= h:
                cv.convex(np.array([lit[0], lit[1], half[1], half[0]]), roof, 146)
            else:
                cv.convex(np.array([lit[0], half[0], half[1], lit[1]]), roof, 146)
        self.boxes.append((cx, cy, 0.5 * math.hypot(w, h)))

    def _openings(self, box: np.ndarray, lean: np.ndarray, angle: float) -> None:
        cv, rng = self.cv, self.rng
        centre = box.mean(0)
        depth = float(np.hypot(*lean)) * 0.6
        for i in range(4):
            p, q = box[i], box[(i + 1) % 4]
            if ((p + q) / 2 - centre) @ self.lean > 0:  # this side faces away: its wall is hidden under the roof
                continue
            length = float(np.hypot(*(q - p)))
            d = (q - p) / max(length, 1e-6)
            n_win = int(length // 3)
            door_at = int(rng.integers(0, max(n_win, 1)))
            side_angle = math.degrees(math.atan2(d[1], d[0]))
            for k in range(n_win):
                m = p + d * (1.5 + 3 * k) - lean * 0.5
                mat = "door" if k == door_at and rng.random() < 0.7 else "window"
                cv.rect(m[0], m[1], 1.0 if mat == "window" else 1.2, depth, side_angle, mat, 100, min_px=1)

    def tree(self, cx, cy, r, mat: str = "tree") -> None:
        cv = self.cv
        v = int(self.rng.integers(100, 125))
        cv.circle(cx, cy, r, mat, v, min_px=2)
        if r * cv.s >= 3:
            cv.circle(cx - self.sun[0] * r * 0.3, cy - self.sun[1] * r * 0.3, r * 0.55, mat, v + 28, min_px=1)

    def trees(self, n: int, x0, y0, x1, y1, rmin=2.0, rmax=5.0, mats=("tree", "tree_light"), avoid=None) -> int:
        """Up to ``n`` trees in a box; ``avoid(x, y) -> bool`` rejects spots (e.g. on water). Returns how many."""
        rng, k = self.rng, 0
        xs, ys = rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)
        rs, ms = rng.uniform(rmin, rmax, n), rng.integers(0, len(mats), n)
        for x, y, r, m in zip(xs.tolist(), ys.tolist(), rs.tolist(), ms.tolist(), strict=True):
            if avoid is not None and avoid(x, y):
                continue
            self.tree(x, y, r, mats[m])
            k += 1
        return k

    def car(self, cx, cy, angle, mat: str | None = None) -> None:
        cv = self.cv
        mat = mat or choose(self.rng, CARS)
        cv.rect(cx, cy, 4.4, 1.8, angle, mat, FLAT, min_px=1)
        if cv.s >= 2:  # windscreen, visible at drone resolution
            a = math.radians(angle)
            cv.rect(cx + 0.7 * math.cos(a), cy + 0.7 * math.sin(a), 1.0, 1.5, angle, "glass", FLAT)

    def cars(self, xs, ys, angles) -> None:
        """Many cars that do not overlap (a parking lot), drawn with one call per colour."""
        xs, ys, angles = (np.asarray(v, np.float64) for v in (xs, ys, angles))
        if not len(xs):
            return
        a = np.radians(angles)[:, None]
        u = np.concatenate([np.cos(a), np.sin(a)], 1) * 2.2
        v = np.concatenate([-np.sin(a), np.cos(a)], 1) * 0.9
        c = np.stack([xs, ys], 1)
        boxes = np.stack([c - u - v, c + u - v, c + u + v, c - u + v], 1)  # (K, 4, 2)
        colour = self.rng.integers(0, len(CARS), len(xs))
        for k, name in enumerate(CARS):
            self.cv.polys(boxes[colour == k], name)
        if self.cv.s >= 2:
            cw = c + u * 0.32
            self.cv.polys(np.stack([cw - u * 0.23 - v * 0.8, cw + u * 0.23 - v * 0.8, cw + u * 0.23 + v * 0.8,
                                    cw - u * 0.23 + v * 0.8], 1), "glass")

    def road(self, pts, width: float, mat: str = "asphalt", marking: bool = True) -> None:
        cv = self.cv
        cv.line(pts, width, mat, FLAT, min_px=2)
        if marking and width >= 6 and cv.s >= 0.9:  # a dashed centre line, all dashes in one call
            pts = np.asarray(pts, np.float64)
            dashes = []
            for p, q in zip(pts[:-1], pts[1:], strict=False):
                length = float(np.hypot(*(q - p)))
                d = (q - p) / max(length, 1e-6)
                t = np.arange(2, length - 2, 9)[:, None]
                dashes.extend(np.stack([p + d * t, p + d * (t + 3)], 1))
            if dashes:
                lines = list(np.rint(np.asarray(dashes) * (cv.s * 8)).astype(np.int32))
                cv2.polylines(cv.mat, lines, False, MAT["marking"], 1, cv2.LINE_8, 3)
                cv2.polylines(cv.shade, lines, False, 140, 1, cv2.LINE_8, 3)

    def blob(self, cx, cy, r, mat: str, irregular: float = 0.25, aspect: float = 1.0, angle: float = 0.0,
             shade: int = FLAT, n: int = 40, on: np.ndarray | None = None) -> np.ndarray:
        """An irregular closed shape of mean radius ``r``; returns its polygon (metres)."""
        rng = self.rng
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        k = np.arange(1, 5)[:, None]
        amp = rng.normal(0, irregular / k, (4, 1))
        ph = rng.uniform(0, 2 * math.pi, (4, 1))
        rad = r * (1 + (amp * np.sin(k * t[None] + ph)).sum(0))
        rad = np.clip(rad, 0.45 * r, 1.7 * r)
        x, y = rad * np.cos(t) * aspect, rad * np.sin(t) / aspect
        ca, sa = math.cos(angle), math.sin(angle)
        pts = np.stack([cx + ca * x - sa * y, cy + sa * x + ca * y], 1)
        if on is None:
            self.cv.poly(pts, mat, shade)
        else:
            self.cv.poly_on(pts, mat, on, shade)
        return pts

    def canopy(self, region: np.ndarray, species: tuple[str, ...], gaps: float = 0.0) -> None:
        """Closed forest over ``region`` (bool map): species in large patches, a few glades if ``gaps`` > 0."""
        cv, rng = self.cv, self.rng
        spec = np.full_like(cv.mat, MAT[species[0]])
        for _ in range(int(rng.integers(2, 6))):
            c = (int(rng.uniform(0, cv.width)), int(rng.uniform(0, cv.height)))
            cv2.circle(spec, c, int(rng.uniform(15, 50) * cv.s), MAT[choose(rng, species)], -1)
        region = region.copy()
        for _ in range(int(gaps * 20)):
            c = (int(rng.uniform(0, cv.width)), int(rng.uniform(0, cv.height)))
            cv2.circle(region.view(np.uint8), c, int(rng.uniform(3, 9) * cv.s), 0, -1)
        cv.canopy(region, spec, rng)

    def patches(self, n: int, mats, rmin: float, rmax: float, on: np.ndarray | None = None) -> None:
        cv, rng = self.cv, self.rng
        for _ in range(n):
            self.blob(rng.uniform(0, cv.w), rng.uniform(0, cv.h), rng.uniform(rmin, rmax), choose(rng, mats), 0.35,
                      on=on)


def _curve(rng, p0, p1, amp: float, n: int = 24) -> np.ndarray:
    """Points from p0 to p1 with a gentle sinusoidal meander of amplitude ``amp`` (metres)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    t = np.linspace(0, 1, n)[:, None]
    d = p1 - p0
    nrm = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-6)
    f, ph = rng.uniform(0.5, 1.5), rng.uniform(0, 2 * math.pi)
    off = amp * np.sin(2 * math.pi * f * t + ph)
    return p0 + t * d + off * nrm


def _crossing(rng, cv: Canvas, orient: str | None = None, center_jitter: float = 0.15):
    """End points of a line crossing the scene (beyond the borders), through a point near the centre."""
    w, h = cv.w, cv.h
    cx = w * (0.5 + rng.uniform(-center_jitter, center_jitter))
    cy = h * (0.5 + rng.uniform(-center_jitter, center_jitter))
    orient = orient or choose(rng, ["h", "v", "d"])
    base = {"h": 0.0, "v": 90.0, "d": float(rng.choice([40.0, 135.0]))}[orient]
    a = math.radians(base + rng.uniform(-12, 12))
    L = 0.75 * math.hypot(w, h)
    d = np.array([math.cos(a), math.sin(a)])
    return np.array([cx, cy]) - d * L, np.array([cx, cy]) + d * L, d


def _side_box(cv: Canvas, side: str, frac: float = 0.33):
    """The (x0, y0, x1, y1) box of one side of the scene in metres."""
    w, h = cv.w, cv.h
    return {
        "left": (0, 0, w * frac, h), "right": (w * (1 - frac), 0, w, h),
        "top": (0, 0, w, h * frac), "bottom": (0, h * (1 - frac), w, h),
    }[side]


def houses_in(p: Painter, box, n: int, size=(8, 14), angle: float | None = None, avoid=None, tries: int = 8,
              roofs: tuple[str, ...] = ROOFS) -> int:
    """Scatter up to ``n`` non-overlapping houses inside ``box``; returns how many were placed."""
    rng, k = p.rng, 0
    x0, y0, x1, y1 = box
    for _ in range(n * tries):
        if k >= n:
            break
        w, h = rng.uniform(*size), rng.uniform(*size) * rng.uniform(0.6, 1.0)
        cx, cy = rng.uniform(x0 + w / 2, max(x1 - w / 2, x0 + w / 2 + 1e-3)), rng.uniform(y0 + h / 2, max(y1 - h / 2, y0 + h / 2 + 1e-3))
        r = 0.5 * math.hypot(w, h) + 2
        if not p.free(cx, cy, r) or (avoid is not None and avoid(cx, cy, r)):
            continue
        p.house(cx, cy, w, h, angle if angle is not None else rng.uniform(0, 180), choose(rng, roofs))
        k += 1
    return k


# ====================================================================== layouts
def pond(cv: Canvas, p: Painter) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    p.patches(int(rng.integers(2, 6)), ["grass_dry", "shrub", "grass"], 10, 40)
    cx, cy = w * rng.uniform(0.25, 0.75), h * rng.uniform(0.25, 0.75)
    r = min(w, h) * rng.uniform(0.12, 0.22)
    aspect = rng.uniform(1.0, 1.35)
    ang = rng.uniform(0, math.pi)
    p.blob(cx, cy, r * 1.12, "grass", 0.2, aspect, ang)  # the bank
    p.blob(cx, cy, r, choose(rng, ["water", "water_green"]), 0.22, aspect, ang)
    on_water = lambda x, y: (x - cx) ** 2 + (y - cy) ** 2 < (1.25 * r * aspect) ** 2  # noqa: E731
    # a ring of trees around the water
    n_ring = int(rng.integers(18, 45))
    a0 = rng.uniform(0, 2 * math.pi)
    span = rng.uniform(1.2, 2.0) * math.pi
    for a in a0 + np.sort(rng.uniform(0, span, n_ring)):
        d = r * aspect * rng.uniform(1.3, 1.9)
        p.tree(cx + d * math.cos(a), cy + d * math.sin(a), rng.uniform(2.5, 5.5), choose(rng, ["tree", "tree_light"]))
    p.trees(int(rng.integers(0, 20)), 0, 0, w, h, avoid=on_water)
    if rng.random() < 0.5:
        side = ["left", "right", "top", "bottom"][int(np.argmax([-cx / w, cx / w, -cy / h, cy / h]) ^ 1)]
        houses_in(p, _side_box(cv, side, 0.3), int(rng.integers(1, 7)),
                  avoid=lambda x, y, rr: on_water(x, y))
    if rng.random() < 0.35:
        p.road([[0, h * 0.04], [w, h * 0.04]] if cy > h / 2 else [[0, h * 0.96], [w, h * 0.96]], rng.uniform(5, 8))


def river(cv: Canvas, p: Painter) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    ground = choose(rng, ["forest", "grass", "farm"])
    if ground == "farm":
        _fields(cv, p, rng.uniform(0, 180))
    else:
        p.patches(int(rng.integers(2, 6)), ["grass_dry", "shrub", "grass"], 10, 40)
    a, b, d = _crossing(rng, cv, center_jitter=0.12)
    width = min(w, h) * rng.uniform(0.08, 0.2)
    pts = _curve(rng, a, b, rng.uniform(0.0, 0.05) * min(w, h), 32)
    cv.line(pts, width * rng.uniform(1.15, 1.4), choose(rng, ["grass", "sand", "grass_dry"]), FLAT)
    cv.line(pts, width, choose(rng, ["water", "water_green"]), FLAT)
    # distance to the river centre line, to keep trees and houses on land
    seg = np.asarray(pts)

    def near(x, y, extra=0.0):
        return np.min(np.hypot(seg[:, 0] - x, seg[:, 1] - y)) < width * 0.75 + extra

    if ground == "forest":
        land = np.ones_like(cv.mat)
        cv2.polylines(land, [(seg * cv.s).astype(np.int32)], False, 0, max(int(width * 1.5 * cv.s), 2))
        p.canopy(land == 1, ("tree", "tree_light", "conifer"), rng.uniform(0.2, 0.6))
    n_trees = {"forest": 30, "grass": 50, "farm": 25}[ground]
    p.trees(int(n_trees * rng.uniform(0.5, 1.0) * w * h / 224**2), 0, 0, w, h, 2.5, 5.5,
            avoid=lambda x, y: near(x, y, 3))
    if rng.random() < 0.5:  # buildings on one bank
        nrm = np.array([-d[1], d[0]])
        sgn = rng.choice([-1, 1])
        centre = np.array([w / 2, h / 2]) + sgn * nrm * min(w, h) * 0.33
        box = (centre[0] - w * 0.25, centre[1] - h * 0.25, centre[0] + w * 0.25, centre[1] + h * 0.25)
        houses_in(p, box, int(rng.integers(1, 9)), avoid=lambda x, y, rr: near(x, y, rr + 2))
    if rng.random() < 0.3:  # a bridge across
        m = seg[len(seg) // 2]
        nrm = np.array([-d[1], d[0]])
        p.road([m - nrm * width * 2.5, m + nrm * width * 2.5], rng.uniform(6, 10), "concrete", marking=False)


def forest(cv: Canvas, p: Painter) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    p.patches(int(rng.integers(3, 8)), ["shrub", "grass_dry"], 10, 35)
    clearing = None
    if rng.random() < 0.35:
        c = (w * rng.uniform(0.25, 0.75), h * rng.uniform(0.25, 0.75), min(w, h) * rng.uniform(0.08, 0.18))
        p.blob(c[0], c[1], c[2], "grass", 0.3)
        clearing = c
    path = None
    if rng.random() < 0.4:
        a, b, _ = _crossing(rng, cv)
        path = _curve(rng, a, b, 8)
        cv.line(path, rng.uniform(3, 6), "dirt")
    species = [("tree", "tree_light"), ("conifer", "tree"), ("tree", "conifer", "tree_light")][int(rng.integers(0, 3))]
    open_ground = np.zeros_like(cv.mat)
    if clearing:
        cv2.circle(open_ground, (int(clearing[0] * cv.s), int(clearing[1] * cv.s)), int(clearing[2] * 1.15 * cv.s), 1, -1)
    if path is not None:
        cv2.polylines(open_ground, [(path * cv.s).astype(np.int32)], False, 1, max(int(5 * cv.s), 2))
    gaps = rng.uniform(0.0, 0.25)  # glades in the canopy where the undergrowth shows
    p.canopy(open_ground == 0, species, gaps)
    if clearing and rng.random() < 0.5:
        houses_in(p, (clearing[0] - clearing[2] * 0.6, clearing[1] - clearing[2] * 0.6,
                      clearing[0] + clearing[2] * 0.6, clearing[1] + clearing[2] * 0.6), int(rng.integers(1, 3)))


def _residential_grid(cv: Canvas, p: Painter, dense: bool) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    sx, sy = rng.uniform(50, 80), rng.uniform(36, 50) if dense else rng.uniform(50, 80)
    x0, y0 = rng.uniform(-sx / 2, 0), rng.uniform(-sy / 2, 0)
    rw = rng.uniform(6, 9)
    xs = np.arange(x0, w + sx, sx)
    ys = np.arange(y0, h + sy, sy)
    for x in xs:
        p.road([[x, -5], [x, h + 5]], rw)
    for y in ys:
        p.road([[-5, y], [w + 5, y]], rw)
    hw_range = (9, 15) if dense else (8, 15)
    block_roof = choose(rng, ROOFS)
    for x in xs[:-1] if len(xs) > 1 else xs:
        for y in ys[:-1] if len(ys) > 1 else ys:
            bx0, bx1 = x + rw / 2 + 1.5, x + sx - rw / 2 - 1.5
            by0, by1 = y + rw / 2 + 1.5, y + sy - rw / 2 - 1.5
            depth = (by1 - by0) / 2 - 1
            for row, yy in enumerate((by0, by1)):
                cx = bx0 + rng.uniform(0, 2)
                while True:
                    hw = rng.uniform(*hw_range)
                    if cx + hw > bx1:
                        break
                    if dense or rng.random() < 0.8:
                        hd = min(depth, rng.uniform(8, 12)) * (1.0 if dense else rng.uniform(0.6, 0.9))
                        cy = yy + hd / 2 if row == 0 else yy - hd / 2
                        roof = block_roof if rng.random() < 0.6 else None
                        p.house(cx + hw / 2, cy, hw, hd, 0, roof)
                    cx += hw + rng.uniform(1.6, 3) if dense else hw + rng.uniform(3, 9)
            if not dense or rng.random() < 0.5:
                p.trees(int(rng.integers(1, 5 if dense else 9)), bx0, by0 + depth * 0.8, bx1, by1 - depth * 0.8, 2, 4)
    # parked cars along the roads
    for _ in range(int(rng.integers(0, 14 if dense else 6))):
        if rng.random() < 0.5:
            x = float(rng.choice(xs)) + rng.choice([-1, 1]) * rw * 0.25
            p.car(x, rng.uniform(0, h), 90)
        else:
            y = float(rng.choice(ys)) + rng.choice([-1, 1]) * rw * 0.25
            p.car(rng.uniform(0, w), y, 0)


def denseresidential(cv: Canvas, p: Painter) -> None:
    cv.fill_where(np.ones_like(cv.mat, bool), choose(p.rng, ["grass", "concrete", "grass_dry"]))
    _residential_grid(cv, p, dense=True)


def sparseresidential(cv: Canvas, p: Painter) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    p.patches(int(rng.integers(2, 6)), ["grass_dry", "shrub", "grass"], 10, 40)
    roads = []
    for _ in range(int(rng.integers(1, 3))):
        a, b, _ = _crossing(rng, cv, center_jitter=0.25)
        pts = _curve(rng, a, b, rng.uniform(0, 10))
        p.road(pts, rng.uniform(5, 7))
        roads.append(pts)
    allpts = np.vstack(roads)

    def near_road(x, y, r):
        return np.min(np.hypot(allpts[:, 0] - x, allpts[:, 1] - y)) < r + 4

    n = max(1, int(rng.integers(2, 9) * max(w * h / 224**2, 0.35)))
    k = 0
    for _ in range(n * 10):
        if k >= max(n, 1):
            break
        i = rng.integers(0, len(allpts))
        q = allpts[i]
        off = rng.uniform(12, 24) * rng.choice([-1, 1], 2)
        x, y = q[0] + off[0], q[1] + off[1]
        hw, hd = rng.uniform(9, 16), rng.uniform(8, 12)
        if not (0 < x < w and 0 < y < h) or near_road(x, y, 0.5 * math.hypot(hw, hd)) or not p.free(x, y, 14):
            continue
        p.house(x, y, hw, hd, rng.uniform(0, 180))
        k += 1
        if rng.random() < 0.45:  # a pool in the garden
            cv.rect(x + rng.uniform(-12, 12), y + rng.uniform(-12, 12), rng.uniform(4, 8), rng.uniform(3, 5),
                    rng.uniform(0, 180), "pool", FLAT, min_px=2)
    p.trees(int(rng.integers(10, 40) * w * h / 224**2), 0, 0, w, h, 2, 5,
            avoid=lambda x, y: near_road(x, y, 0) or not p.free(x, y, 2))


def parking(cv: Canvas, p: Painter) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    p.patches(int(rng.integers(1, 4)), ["grass_dry", "grass"], 10, 40)
    lx0, ly0 = w * rng.uniform(0.0, 0.2), h * rng.uniform(0.0, 0.2)
    lx1, ly1 = w * rng.uniform(0.75, 1.0), h * rng.uniform(0.75, 1.0)
    lot = choose(rng, ["asphalt", "asphalt", "concrete"])
    cv.poly([[lx0, ly0], [lx1, ly0], [lx1, ly1], [lx0, ly1]], lot)
    fill = rng.uniform(0.35, 0.95)
    vertical = rng.random() < 0.5  # cars point up-down in rows running left-right, or the other way
    slot, depth, aisle = 2.7, 5.2, rng.uniform(6, 8)
    u0, u1 = (lx0, lx1) if vertical else (ly0, ly1)
    v0, v1 = (ly0, ly1) if vertical else (lx0, lx1)
    v = v0 + 2
    cx_, cy_, ca_ = [], [], []
    while v + 2 * depth < v1:
        us = np.arange(u0 + 2, u1 - 2 - slot, slot)
        for row in range(2):
            vc = v + depth * (row + 0.5)
            if cv.s >= 2:  # bay lines, visible at drone resolution only
                for u in us:
                    a, b = (u, v + depth * row), (u, v + depth * (row + 1))
                    cv.line([a, b] if vertical else [a[::-1], b[::-1]], 0.15, "marking", 140, min_px=1)
            taken = us[rng.random(len(us)) < fill] + slot / 2
            k = len(taken)
            jit_u, jit_v = rng.normal(0, 0.1, k), rng.normal(0, 0.2, k)
            if vertical:
                cx_.append(taken + jit_u), cy_.append(vc + jit_v), ca_.append(90 + rng.normal(0, 3, k))
            else:
                cx_.append(vc + jit_v), cy_.append(taken + jit_u), ca_.append(rng.normal(0, 3, k))
        v += 2 * depth + aisle
    if cx_:
        p.cars(np.concatenate(cx_), np.concatenate(cy_), np.concatenate(ca_))
    p.trees(int(rng.integers(4, 25)), 0, 0, w, h, 2.5, 5,
            avoid=lambda x, y: lx0 - 2 < x < lx1 + 2 and ly0 - 2 < y < ly1 + 2)
    if rng.random() < 0.4:
        side = choose(rng, ["left", "right", "top", "bottom"])
        box = _side_box(cv, side, 0.2)
        houses_in(p, box, int(rng.integers(1, 3)), size=(20, 40), angle=0, roofs=("roof_metal", "roof_white", "roof_grey"))


def _fields(cv: Canvas, p: Painter, angle: float) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    fw, fh = rng.uniform(40, 90), rng.uniform(30, 70)
    ca, sa = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    R = math.hypot(w, h)
    crops = ["crop", "crop_yellow", "crop_dark", "plough", "grass_dry", "crop"]
    for i in np.arange(-R, R, fw):
        for j in np.arange(-R, R, fh):
            jx, jy = rng.uniform(-4, 4, 2)
            loc = np.array([[i, j], [i + fw + jx, j], [i + fw + jx, j + fh + jy], [i, j + fh + jy]])
            pts = np.stack([w / 2 + ca * loc[:, 0] - sa * loc[:, 1], h / 2 + sa * loc[:, 0] + ca * loc[:, 1]], 1)
            if pts[:, 0].max() < 0 or pts[:, 0].min() > w or pts[:, 1].max() < 0 or pts[:, 1].min() > h:
                continue
            cv.poly(pts, choose(rng, crops), int(rng.integers(116, 140)))
            cv.line(np.vstack([pts, pts[:1]]), rng.uniform(1.5, 3), "dirt")


def farmland(cv: Canvas, p: Painter) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    _fields(cv, p, rng.choice([0.0, 90.0, rng.uniform(0, 180)]))
    if rng.random() < 0.4:
        a, b, _ = _crossing(rng, cv)
        p.road([a, b], rng.uniform(5, 7), marking=False)
    if rng.random() < 0.4:  # a tree line along a field edge
        y = rng.uniform(0.2, 0.8) * h
        for x in np.arange(rng.uniform(0, 6), w, rng.uniform(5, 8)):
            p.tree(x, y + rng.normal(0, 1), rng.uniform(2.5, 4))
    if rng.random() < 0.4:
        x, y = rng.uniform(0.15, 0.85) * w, rng.uniform(0.15, 0.85) * h
        houses_in(p, (x - 20, y - 20, x + 20, y + 20), int(rng.integers(1, 4)))


def bareland(cv: Canvas, p: Painter) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    p.patches(int(rng.integers(3, 8)), ["sand", "dirt", "gravel", "plough"], 15, 60)
    p.patches(int(rng.integers(0, 6)), ["rocks", "gravel"], 3, 10)
    for _ in range(int(rng.integers(0, 3))):
        a, b, _ = _crossing(rng, cv, center_jitter=0.3)
        cv.line(_curve(rng, a, b, 10), rng.uniform(3, 5), choose(rng, ["sand", "gravel"]))
    for _ in range(int(rng.integers(0, 12))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        p.tree(x, y, rng.uniform(1.0, 2.5), choose(rng, ["shrub", "bald_tree"]))
    if rng.random() < 0.2:
        houses_in(p, (0, 0, w, h), int(rng.integers(1, 3)))


def beach(cv: Canvas, p: Painter) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    side = choose(rng, ["left", "right", "top", "bottom"])
    p.patches(int(rng.integers(2, 5)), ["grass", "shrub", "grass_dry"], 10, 40)
    horizontal = side in ("top", "bottom")
    L = w if horizontal else h
    depth = h if horizontal else w
    sea = rng.uniform(0.25, 0.45) * depth
    sand = sea + rng.uniform(0.15, 0.3) * depth
    t = np.linspace(-5, L + 5, 40)
    wob = _curve(rng, [0, 0], [1, 0], 6, 40)[:, 1] * 1.0

    def band(d_from, d_to, mat):
        a = d_from + 0 * t
        b = d_to + wob * (1 if d_to < depth else 0)
        near = a if side in ("top", "left") else depth - a
        far = b if side in ("top", "left") else depth - b
        pts = np.concatenate([np.stack([t, near], 1), np.stack([t[::-1], far[::-1]], 1)])
        if not horizontal:
            pts = pts[:, ::-1]
        cv.poly(pts, mat)

    band(-5, sand, "sand")
    band(-5, sea + 3, "foam")
    band(-5, sea, "sea")
    land = _side_box(cv, {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[side],
                     max(0.05, 1 - sand / depth - 0.05))
    if rng.random() < 0.6:
        p.trees(int(rng.integers(5, 40)), *land, 2, 4.5)
    if rng.random() < 0.5:
        houses_in(p, land, int(rng.integers(1, 8)))
    if rng.random() < 0.4:
        x0, y0, x1, y1 = land
        if horizontal:
            yy = (y0 + y1) / 2
            p.road([[-5, yy], [w + 5, yy]], rng.uniform(5, 7))
        else:
            xx = (x0 + x1) / 2
            p.road([[xx, -5], [xx, h + 5]], rng.uniform(5, 7))


def park(cv: Canvas, p: Painter) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    cv.fill_where(np.ones_like(cv.mat, bool), choose(rng, ["lawn", "grass"]))
    p.patches(int(rng.integers(1, 4)), ["grass", "grass_dry"], 10, 30)
    water = None
    if rng.random() < 0.45:
        water = (w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.7), min(w, h) * rng.uniform(0.08, 0.15))
        p.blob(*water, "water", 0.3)
    for _ in range(int(rng.integers(1, 4))):
        a, b, _ = _crossing(rng, cv, center_jitter=0.3)
        cv.line(_curve(rng, a, b, rng.uniform(5, 20)), rng.uniform(2.5, 4.5), choose(rng, ["gravel", "concrete", "pavers"]))
    if rng.random() < 0.5:  # a small plaza
        cv.circle(w * rng.uniform(0.2, 0.8), h * rng.uniform(0.2, 0.8), rng.uniform(6, 14), "pavers")

    def wet(x, y):
        return water is not None and (x - water[0]) ** 2 + (y - water[1]) ** 2 < (water[2] * 1.6) ** 2

    for _ in range(int(rng.integers(3, 8))):  # clumps of trees
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(10, 30)
        p.trees(int(rng.integers(5, 25)), cx - r, cy - r, cx + r, cy + r, 2.5, 5.5, avoid=wet)
    if rng.random() < 0.3:
        houses_in(p, (0, 0, w, h), 1, avoid=lambda x, y, rr: wet(x, y))


def playground(cv: Canvas, p: Painter) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    p.patches(int(rng.integers(1, 4)), ["grass", "grass_dry", "concrete"], 10, 40)
    cx, cy = w * rng.uniform(0.4, 0.6), h * rng.uniform(0.4, 0.6)
    horiz = rng.random() < 0.6
    L, R = rng.uniform(70, 90), rng.uniform(30, 38)  # straight length and bend radius of a 400 m track
    lane = rng.uniform(7, 10)

    def stadium(rr, mat, shade=FLAT):
        t1 = np.linspace(-math.pi / 2, math.pi / 2, 20)
        right = np.stack([L / 2 + rr * np.cos(t1), rr * np.sin(t1)], 1)
        left = np.stack([-L / 2 - rr * np.cos(t1), -rr * np.sin(t1)], 1)
        pts = np.vstack([right, left])
        if not horiz:
            pts = pts[:, ::-1]
        cv.poly(pts + [cx, cy], mat, shade)

    stadium(R + lane + 3, "concrete")
    stadium(R + lane, "track")
    stadium(R, "lawn")
    if rng.random() < 0.5:
        for k in range(1, 4):
            t1 = np.linspace(0, 2 * math.pi, 60)
            rr = R + lane * k / 4
            ell = np.stack([np.where(np.cos(t1) > 0, L / 2, -L / 2) + rr * np.cos(t1), rr * np.sin(t1)], 1)
            if not horiz:
                ell = ell[:, ::-1]
            cv.line(ell + [cx, cy], 0.2, "marking", 150, min_px=1)
    ext_x = (L / 2 + R + lane + 6) if horiz else (R + lane + 6)
    ext_y = (R + lane + 6) if horiz else (L / 2 + R + lane + 6)

    def on_field(x, y, r=0.0):
        return abs(x - cx) < ext_x + r and abs(y - cy) < ext_y + r

    if rng.random() < 0.6:
        houses_in(p, (0, 0, w, h), int(rng.integers(1, 6)), size=(12, 30), avoid=on_field)
    p.trees(int(rng.integers(5, 40)), 0, 0, w, h, 2.5, 5, avoid=lambda x, y: on_field(x, y) or not p.free(x, y, 1))


def industrial(cv: Canvas, p: Painter) -> None:
    rng = p.rng
    w, h = cv.w, cv.h
    cv.fill_where(np.ones_like(cv.mat, bool), choose(rng, ["concrete", "asphalt", "dirt"]))
    p.patches(int(rng.integers(2, 6)), ["dirt", "grass_dry", "gravel", "concrete"], 10, 30)
    a, b, _ = _crossing(rng, cv, orient=choose(rng, ["h", "v"]), center_jitter=0.3)
    p.road([a, b], rng.uniform(7, 10))
    houses_in(p, (0, 0, w, h), int(rng.integers(2, 7) * max(w * h / 224**2, 0.3)), size=(25, 60), angle=0,
              roofs=("roof_metal", "roof_white", "roof_blue", "roof_grey"))
    if rng.random() < 0.5:  # storage tanks
        x, y = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        r = rng.uniform(5, 10)
        for i in range(int(rng.integers(2, 6))):
            tx, ty = x + (i % 3) * r * 2.4, y + (i // 3) * r * 2.4
            if p.free(tx, ty, r):
                cv.circle(tx, ty, r, "roof_white", 122)
                cv.circle(tx - p.sun[0] * r * 0.3, ty - p.sun[1] * r * 0.3, r * 0.5, "roof_white", 142)
                p.boxes.append((tx, ty, r))
    for _ in range(int(rng.integers(0, 10))):
        p.car(rng.uniform(0, w), rng.uniform(0, h), rng.choice([0.0, 90.0]), "car_white")
    p.trees(int(rng.integers(0, 10)), 0, 0, w, h, 2, 4, avoid=lambda x, y: not p.free(x, y, 1))


# open ground: where drone-only patches (gravel, rocks, clutter) may be painted, never over cars or roofs
GROUND = np.zeros(256, bool)
for _name in ("grass", "grass_dry", "lawn", "dirt", "sand", "shrub", "crop", "crop_yellow", "crop_dark", "plough",
              "concrete", "asphalt", "gravel"):
    GROUND[MAT[_name]] = True
LAWN = np.zeros(256, bool)
LAWN[[MAT["grass"], MAT["grass_dry"], MAT["lawn"]]] = True


def drone_extras(cv: Canvas, p: Painter) -> None:
    """What a drone flying low sees on top of the layout: people, dogs, bicycles, markers, obstacles, fences, rocks."""
    rng = p.rng
    w, h = cv.w, cv.h
    if rng.random() < 0.5:  # a garden fence with poles
        x0, y0 = rng.uniform(0, w * 0.5), rng.uniform(0, h * 0.5)
        x1, y1 = x0 + w * rng.uniform(0.2, 0.6), y0 + h * rng.uniform(0.2, 0.6)
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])[: int(rng.integers(2, 5))]
        cv.line(pts, 0.25, "fence", FLAT, min_px=2)
        for a, b in zip(pts[:-1], pts[1:], strict=False):
            for t in np.arange(0, 1.0001, 2.5 / max(np.linalg.norm(b - a), 1)):
                q = a + (b - a) * t
                cv.circle(q[0], q[1], 0.22, "fence_pole", 100, min_px=3)
    if rng.random() < 0.5:
        p.patches(int(rng.integers(1, 3)), ["gravel", "dirt", "rocks"], 3, 8, on=GROUND)
    if rng.random() < 0.3:
        p.patches(1, ["clutter"], 1, 3, on=GROUND)
    for _ in range(int(rng.integers(0, 3))):
        p.tree(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, 4), "bald_tree")
    for _ in range(int(rng.integers(1, 14))):  # people, some in small groups, some walking a dog
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        for _ in range(int(rng.integers(1, 4))):
            cv.circle(x, y, 0.4, choose(rng, PEOPLE), FLAT, min_px=3)
            x, y = x + rng.uniform(-1.5, 1.5), y + rng.uniform(-1.5, 1.5)
        if rng.random() < 0.3:
            cv.rect(x + 1.2, y + 0.4, 1.0, 0.45, rng.uniform(0, 180), "dog", FLAT, min_px=2)
    for _ in range(int(rng.integers(0, 4))):
        cv.rect(rng.uniform(0, w), rng.uniform(0, h), 1.8, 0.55, rng.uniform(0, 180), "bicycle", FLAT, min_px=2)
    for _ in range(int(rng.integers(0, 4))):
        cv.rect(rng.uniform(0, w), rng.uniform(0, h), 1.5, 1.5, rng.uniform(0, 90), "ar_marker", FLAT, min_px=3)
    for _ in range(int(rng.integers(1, 7))):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        cv.rect(x, y, rng.uniform(0.6, 2.5), rng.uniform(0.6, 1.5), rng.uniform(0, 180),
                choose(rng, ["obstacle", "obstacle_grey"]), FLAT, min_px=2)
    if rng.random() < 0.25:  # a garden pool, on a lawn only
        box = cv2.boxPoints(((rng.uniform(0, w), rng.uniform(0, h)), (rng.uniform(5, 10), rng.uniform(3, 5)),
                             rng.uniform(0, 180)))
        cv.poly_on(box, "pool", LAWN)


LAYOUTS: dict[str, Callable[[Canvas, Painter], None]] = {
    "bareland": bareland,
    "beach": beach,
    "denseresidential": denseresidential,
    "farmland": farmland,
    "forest": forest,
    "industrial": industrial,
    "park": park,
    "parking": parking,
    "playground": playground,
    "pond": pond,
    "river": river,
    "sparseresidential": sparseresidential,
}
CATEGORIES: tuple[str, ...] = tuple(LAYOUTS)

BACKGROUND = {
    "bareland": "dirt", "beach": "grass", "denseresidential": "grass", "farmland": "crop", "forest": "shrub",
    "industrial": "concrete", "park": "grass", "parking": "grass", "playground": "grass", "pond": "grass",
    "river": "grass", "sparseresidential": "grass",
}

# The drone set favours the close-range content of the real drone dataset (gardens, houses, streets, people).
DRONE_MIX = {
    "sparseresidential": 4, "denseresidential": 3, "park": 3, "parking": 2, "playground": 2, "pond": 2,
    "river": 1, "forest": 1, "farmland": 1, "bareland": 1, "beach": 1, "industrial": 1,
}


def draw_scene(category: str, width: int, height: int, px_per_m: float, rng: np.random.Generator,
               extras: bool = False) -> Canvas:
    """Lay out one scene of ``category`` on a fresh canvas; ``extras`` adds the drone-only small objects."""
    cv = Canvas(width, height, px_per_m, BACKGROUND[category])
    p = Painter(cv, rng)
    LAYOUTS[category](cv, p)
    if extras:
        drone_extras(cv, p)
    return cv


__all__ = ["CATEGORIES", "DRONE_MIX", "LAYOUTS", "MAT", "Canvas", "Painter", "draw_scene"]
