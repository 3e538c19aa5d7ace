"""Mask of group ids -> composition record (``segcap.composition/2``): what the LLM reads and a person inspects.

Library::

    from composition.extract import extract
    record = extract(mask, load_class_table("seed10"), image="pond_12.jpg")   # mask: (H, W) ints, ids < 10

Command line (a folder of PNG masks, in file order, one JSON object a line)::

    python -m composition.extract --masks runs/pred_masks --out runs/compositions.jsonl
    python -m composition.extract --masks data/synthetic/rsicd/label_images_semantic --source-ids \\
        --out runs/gt_compositions.jsonl --workers 2 --config configs/composition.yaml

``--source-ids`` says the masks hold the drone dataset's 24 source ids (ground truth), grouped with the class table
first. Bad files are reported and skipped (``--strict`` stops at the first, exit code 2).

Scenes: when the masks' folder holds ``scenes.json`` (a segmenter with a scene head writes it beside the masks), each
record gets its mask's top scenes (``"scenes"``, matched by mask stem); ``--scenes PATH`` names another file,
``--scenes null`` leaves them out. A mask the file lacks stops the run before anything is written.

Measurements (pixel (row i, column j) has its centre at x = (j + 0.5) / W, y = (i + 0.5) / H):

- ``percent``: share of the image in tenths of a percent, by the largest-remainder rule so one image sums to exactly
  100.0; a present class never shows 0.0 (it gets 0.1, taken from the largest class).
- ``center``/``radius``: minimum enclosing circle of the class's pixel centres; radius in units of the longer side,
  plus half a pixel (a one-pixel class has radius 0.5 px; a drawn disc of radius R px gets about R).
- ``centroid``: mean pixel centre. ``bbox``: [x0, y0, x1, y1] of the pixel edges. ``position``: 3x3 cell of the centroid.
- ``regions``: 8-connected components of at least ``min_region_pixels`` (at least 1 for a present class);
  ``largest_region_percent``: the largest component's share of the image.
- ``elongation``: length / width of the largest component's minimum-area rectangle, each side + 1 pixel (>= 1).

:func:`extract` finds every class's bounding box in one pass over the mask (:func:`boxes`), then measures each
present class over its box only (OpenCV on uint8). The tests compare its records with a straightforward per-class
extractor (``bench/reference_extractor.py``: boolean mask and ``np.where`` per class) on many masks;
``python -m bench.composition_speed`` times the two.
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

import cv2
import numpy as np

from aerialdata.classes import ClassTable, load_class_table
from aerialdata.images import list_images, read_mask
from composition.config import CompositionConfig
from composition.relations import ClassStats, relations, subjects
from composition.schema import SCHEMA_ID, read_scenes, scene_problems, write_jsonl
from segcap.atomic import check_writable
from segcap.cli import run
from segcap.errors import DataError, DatasetNotFoundError
from segcap.options import NonNegativeInt, checked
from segcap.progress import Progress

POSITIONS = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
_DEFAULT = CompositionConfig()
# Up to max(_FEW, pixels // _PIXELS_PER_BOX) components, areas are counted per component box (cost grows with the
# number of components); beyond, by OpenCV's per-component statistics (cost grows with the box's pixels, about 3x a
# plain labelling). The crossover keeps the cost per pixel flat when a noisy mask's component count grows with its size.
_FEW = 16
_PIXELS_PER_BOX = 2048


# ----------------------------------------------------------------------------------------------------------- checks
def check_mask(mask, num_classes: int, where: str = "mask") -> np.ndarray:
    """Return ``mask`` as a C-contiguous (H, W) uint8 array of ids < ``num_classes``, or raise :class:`DataError`."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        hint = (" (a colour rendering? class-id masks are single-channel; read them with aerialdata.images.read_mask)"
                if mask.ndim == 3 else "")
        raise DataError(f"{where}: mask must be a 2-D (H, W) array of class ids, got shape {mask.shape}{hint}")
    if mask.dtype.kind not in "ui":
        raise DataError(f"{where}: mask must hold integer class ids, got dtype {mask.dtype}; "
                        "convert with mask.astype(np.uint8) after checking the values")
    if mask.size == 0:
        raise DataError(f"{where}: mask is empty (shape {mask.shape})")
    if num_classes > 255:
        raise DataError(f"{where}: class tables of more than 255 classes are not supported")
    lo, hi = (0 if mask.dtype.kind == "u" else int(mask.min())), int(mask.max())
    if lo < 0 or hi >= num_classes:
        bad = np.unique(mask[(mask < 0) | (mask >= num_classes)])[:10].tolist()
        raise DataError(
            f"{where}: mask holds ids {bad} outside 0..{num_classes - 1} of the class table; masks must hold group "
            "ids (pass --source-ids for masks of the drone dataset's 24 source ids)"
        )
    return np.ascontiguousarray(mask, dtype=np.uint8)


# ------------------------------------------------------------------------------------------------- fast measurement
_KERNELS: dict[int, np.ndarray] = {}
_ARANGE = np.arange(0)


def _kernel(r: int) -> np.ndarray:
    if r not in _KERNELS:
        _KERNELS[r] = np.ones((2 * r + 1, 2 * r + 1), np.uint8)
    return _KERNELS[r]


def _arange(n: int) -> np.ndarray:
    global _ARANGE
    if len(_ARANGE) < n:
        _ARANGE = np.arange(max(n, 2048), dtype=np.int64)
    return _ARANGE


def _largest(st: np.ndarray) -> int:
    """Label of the largest component in a connectedComponentsWithStats table; ties by top, left, width, height
    (so the choice does not depend on the labelling algorithm's numbering)."""
    rows = st[1:]
    order = np.lexsort((rows[:, cv2.CC_STAT_HEIGHT], rows[:, cv2.CC_STAT_WIDTH], rows[:, cv2.CC_STAT_LEFT],
                        rows[:, cv2.CC_STAT_TOP], -rows[:, cv2.CC_STAT_AREA]))
    return int(order[0]) + 1


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull starting at its smallest (x, y) vertex: OpenCV's circle and rectangle fits depend on the start."""
    hull = cv2.convexHull(points)  # (n, 1, 2) int32, clockwise
    flat = hull.reshape(-1, 2).astype(np.int64)
    i = int(np.argmin(flat[:, 0] * (1 << 32) + flat[:, 1]))
    return hull if i == 0 else np.concatenate((hull[i:], hull[:i]))


def _ring(m: np.ndarray, c: int, bbox, r: int, num_classes: int) -> np.ndarray:
    """(K,) counts of the classes in the ``r``-pixel ring around class ``c`` (square dilation, inside the image).

    Only the class's bounding box ``bbox`` grown by ``r`` is touched. Every pixel of class ``c`` in that crop belongs
    to the class, so the ring's histogram is the dilated class's histogram with class ``c`` itself set to 0.
    """
    h, w = m.shape
    x0, y0, x1, y1 = bbox
    crop = m[max(y0 - r, 0): min(y1 + r, h), max(x0 - r, 0): min(x1 + r, w)]
    grown = cv2.dilate((crop == c).view(np.uint8), _kernel(r))
    hist = cv2.calcHist([crop], [0], grown, [num_classes], [0, num_classes]).ravel().astype(np.int64)
    hist[c] = 0
    return hist


_BIT_TYPES = ((16, np.uint16), (32, np.uint32), (64, np.uint64))


def boxes(m: np.ndarray, num_classes: int) -> dict[int, tuple[int, int, int, int]]:
    """{class id: (x0, y0, x1, y1)} bounding box of every class present (x1, y1 exclusive), in one pass.

    Each pixel becomes the bit ``1 << id``; OR-ing the bits down the columns and along the rows gives, per column and
    per row, the set of classes found there; a class's box runs from the first to the last column (row) holding it.
    Tables of more than 64 classes fall back to one ``cv2.boundingRect`` per class.

    Why not always the per-class ``cv2.boundingRect`` (``bench/reference_extractor.py``'s ``boxes_reference``): it
    reads the whole mask once per class. Measured in one process, :func:`extract` with either boxes, interleaved
    mask by mask, 7-11 passes, CPU time on one thread (``python -m bench.composition_speed --boxes-ab``; 2 cores,
    busy, 2026-11-30, four runs): the box step alone is 1.8x / 3.4x / 3.6x faster at 224 / 512 / 1024 px, and whole
    masks/s rise by +2-4% / +8-12% / +14-16% on clean masks, +1-3% / +1-6% / +2-5% on speckled ones (medians of the
    passes). At 224 alone that would not pay for the code; masks are written at the image's size, though, and larger
    images (256-500 px caption sets, drone photos) are where it counts.
    """
    dtype = next((t for n, t in _BIT_TYPES if num_classes <= n), None)
    if dtype is None:
        out = {}
        for c in range(int(m.max()) + 1):
            x, y, w, h = cv2.boundingRect((m == c).view(np.uint8))
            if w:
                out[c] = (x, y, x + w, y + h)
        return out
    bits = np.left_shift(dtype(1), m, dtype=dtype)
    cols = np.bitwise_or.reduce(bits, axis=0)  # (W,) classes per column
    rows = np.bitwise_or.reduce(bits, axis=1)  # (H,) classes per row
    present = int(np.bitwise_or.reduce(cols))
    ids = [c for c in range(num_classes) if present >> c & 1]
    shifts = np.array(ids, dtype=dtype)[:, None]
    in_col = (cols[None, :] >> shifts & 1) != 0
    in_row = (rows[None, :] >> shifts & 1) != 0
    x0 = in_col.argmax(1).tolist()
    x1 = (in_col.shape[1] - in_col[:, ::-1].argmax(1)).tolist()
    y0 = in_row.argmax(1).tolist()
    y1 = (in_row.shape[1] - in_row[:, ::-1].argmax(1)).tolist()
    return {c: (x0[i], y0[i], x1[i], y1[i]) for i, c in enumerate(ids)}


def measure(m: np.ndarray, num_classes: int, cfg: CompositionConfig) -> dict[int, ClassStats]:
    """Fast measurements of every present class (ring not yet filled in).

    1. The bounding boxes of all classes in one pass (:func:`boxes`); then per present class, over its box only:
    2. a 0/1 image and coordinate sums from its row and column sums; 3. outer contours; 4. connected components,
    their areas counted per component box when there are few, else by OpenCV's statistics; 5. the convex hull of the
    outer contours gives the enclosing circle, the largest component's the minimum-area rectangle.
    """
    out = {}
    ar = _arange(max(m.shape))
    min_px = cfg.min_region_pixels
    for c, bbox in boxes(m, num_classes).items():
        x0, y0, x1, y1 = bbox
        binary = (m[y0:y1, x0:x1] == c).view(np.uint8)  # (h, w) 0/1, contiguous
        col = cv2.reduce(binary, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()  # (w,) pixels per column
        row = cv2.reduce(binary, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel()  # (h,) pixels per row
        count = int(col.sum())
        sum_x = int(col @ ar[x0:x1])
        sum_y = int(row @ ar[y0:y1])
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
        few = max(_FEW, binary.size // _PIXELS_PER_BOX)
        if len(contours) > few:
            n, labels = len(contours) + 1, None  # at least that many components: go to the statistics
        else:
            n, labels = cv2.connectedComponentsWithAlgorithm(binary, 8, cv2.CV_32S, cv2.CCL_GRANA)
        if n == 2:  # one component: it is the whole class, and its contour the only one
            regions, largest_area, largest = 1, count, contours[0]
        elif len(contours) == n - 1 <= few:  # a few components, each with its own outer contour: area per box
            comps = []
            for cnt in contours:
                x, y, w, h = cv2.boundingRect(cnt)  # the component's box (image coordinates)
                comps.append([w * h, y, x, w, h, cnt])
            big = max(range(len(comps)), key=lambda i: comps[i][0])  # largest box: counted last, by difference
            rest = 0
            for i, comp in enumerate(comps):
                if i != big:
                    _, y, x, w, h, cnt = comp
                    k = labels[cnt[0, 0, 1] - y0, cnt[0, 0, 0] - x0]
                    comp[0] = cv2.countNonZero((labels[y - y0: y - y0 + h, x - x0: x - x0 + w] == k).view(np.uint8))
                    rest += comp[0]
            comps[big][0] = count - rest
            # the largest component; ties by top, left, width, height (as _largest)
            best = min(comps, key=lambda cp: (-cp[0], cp[1], cp[2], cp[3], cp[4]))
            regions = max(1, sum(cp[0] >= min_px for cp in comps))
            largest_area, largest = best[0], best[5]
        else:  # many components, or one inside a hole of another: OpenCV's per-component statistics
            n, labels, st, _ = cv2.connectedComponentsWithStatsWithAlgorithm(binary, 8, cv2.CV_32S, cv2.CCL_GRANA)
            areas = st[1:, cv2.CC_STAT_AREA]
            k = _largest(st)
            regions = max(1, int((areas >= min_px).sum()))
            largest_area = int(areas[k - 1])
            # its outer contour, traced in its own box (it may lie in a hole of another component)
            x, y, w, h = (int(v) for v in st[k, :4])
            largest = cv2.findContours((labels[y: y + h, x: x + w] == k).view(np.uint8), cv2.RETR_EXTERNAL,
                                       cv2.CHAIN_APPROX_SIMPLE, offset=(x0 + x, y0 + y))[0][0]
        hull = _hull(contours[0] if len(contours) == 1 else np.concatenate(contours))
        (cx, cy), radius = cv2.minEnclosingCircle(hull)
        _, (rw, rh), _ = cv2.minAreaRect(hull if largest is contours[0] and len(contours) == 1 else _hull(largest))
        out[c] = ClassStats(c, count, sum_x, sum_y, bbox, regions, largest_area, (cx, cy, radius), (rw, rh))
    return out


def extract(mask, table: ClassTable, image: str = "x.jpg", cfg: CompositionConfig | None = None,
            where: str | None = None, scenes: list[dict] | None = None) -> dict:
    """The composition record of a (H, W) mask of group ids of ``table``.

    Args:
        mask: (H, W) integer array of group ids (0..table.num_classes - 1).
        table: the class table whose ids the mask holds (names in the record come from it).
        image: the image file name recorded in ``"image"`` (the caption set's filename).
        cfg: thresholds; default :class:`CompositionConfig` (same as configs/composition.yaml).
        where: name of the mask in error messages (default: ``image``).
        scenes: the scene head's top scenes of this image, most probable first (``[{"name": "airplane",
            "probability": 0.931}, ...]``, 1 to 5); None (no scene head): the record has no ``"scenes"``.
    """
    cfg = cfg or _DEFAULT
    m = check_mask(mask, table.num_classes, where or image)
    stats = measure(m, table.num_classes, cfg)
    order, tenths = _order(stats, m.size)
    for s in subjects(order, stats, table.names, m.size, cfg):
        stats[s].ring = _ring(m, s, stats[s].bbox, cfg.ring_pixels, table.num_classes)
    record = _record(stats, order, tenths, table, m.shape, image, cfg)
    return record if scenes is None else with_scenes(record, scenes, where or image)


def with_scenes(record: dict, scenes: list[dict], where: str = "scenes") -> dict:
    """``record`` (a new dict) with ``scenes`` after its size, probabilities rounded to 3 decimals, or a
    :class:`DataError` naming ``where`` when they are not 1 to 5 {name, probability} entries, most probable first."""
    found = scene_problems(scenes)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DataError(f"{where}: bad scenes: {found[0]}{more}")
    listed = [{"name": s["name"], "probability": round(float(s["probability"]), 3)} for s in scenes]
    out = {}
    for key, value in record.items():
        if key != "scenes":
            out[key] = value
        if key == "height":
            out["scenes"] = listed
    out["schema"] = SCHEMA_ID
    return out


# ---------------------------------------------------------------------------------------------------- the record
def _order(stats: dict[int, ClassStats], total: int) -> tuple[list[int], dict[int, int]]:
    """Record order (percent desc, pixels desc, id) and percent in tenths (largest remainder, sum 1000, min 1)."""
    ids = sorted(stats)
    tenths = {c: stats[c].count * 1000 // total for c in ids}
    left = 1000 - sum(tenths.values())
    by_rem = sorted(ids, key=lambda c: (-(stats[c].count * 1000 % total), -stats[c].count, c))
    for c in by_rem[:left]:
        tenths[c] += 1
    for c in ids:  # a present class never reads 0.0%
        if tenths[c] == 0:
            big = max(ids, key=lambda i: (tenths[i], stats[i].count, -i))
            tenths[big] -= 1
            tenths[c] = 1
    order = sorted(ids, key=lambda c: (-tenths[c], -stats[c].count, c))
    return order, tenths


def _position(st: ClassStats, width: int, height: int) -> str:
    """3x3 cell of the centroid, in exact integer arithmetic: x = (2 sum_x + n) / (2 n W) against 1/3 and 2/3."""
    def cell(s: int, size: int) -> int:
        v = 3 * (2 * s + st.count)
        return 0 if v < 2 * st.count * size else (2 if v > 4 * st.count * size else 1)

    return POSITIONS[cell(st.sum_y, height)][cell(st.sum_x, width)]


def _record(stats, order, tenths, table: ClassTable, shape, image: str, cfg: CompositionConfig) -> dict:
    height, width = shape
    names = table.names
    total, side = width * height, max(width, height)
    classes = []
    for c in order:
        st = stats[c]
        cx, cy, r = st.circle
        x0, y0, x1, y1 = st.bbox
        percent = tenths[c] / 10
        long_side, short_side = max(st.rect) + 1.0, min(st.rect) + 1.0
        classes.append({
            "id": int(c),
            "name": names[c],
            "percent": percent,
            "center": [round((cx + 0.5) / width, 3), round((cy + 0.5) / height, 3)],
            "radius": round((r + 0.5) / side, 3),
            "centroid": [round((st.sum_x / st.count + 0.5) / width, 3),
                         round((st.sum_y / st.count + 0.5) / height, 3)],
            "regions": st.regions,
            "largest_region_percent": min(round(100.0 * st.largest_area / total, 1), percent),
            "bbox": [round(x0 / width, 3), round(y0 / height, 3), round(x1 / width, 3), round(y1 / height, 3)],
            "elongation": round(max(long_side / short_side, 1.0), 2),
            "position": _position(st, width, height),
        })
    return {
        "schema": SCHEMA_ID,
        "image": str(image),
        "width": int(width),
        "height": int(height),
        "classes": classes,
        "relations": relations(order, stats, names, width, height, cfg),
    }


# ------------------------------------------------------------------------------------------------------------ CLI
def _one(path: Path, table: ClassTable, source_ids: bool, image_suffix: str, cfg: CompositionConfig):
    """(record, None) or (None, error message) for one mask file."""
    try:
        mask = read_mask(path)
        if source_ids:
            mask = table.group(mask, where=path)
        return extract(mask, table, image=path.stem + image_suffix, cfg=cfg, where=str(path)), None
    except DataError as e:
        return None, str(e)


@checked
def main(
    masks: Path,
    out: Path,
    classes: str = "seed10",
    scenes: str | None = "auto",
    source_ids: bool = False,
    image_suffix: str = ".jpg",
    workers: NonNegativeInt = 0,
    strict: bool = False,
    overwrite: bool = False,
    thresholds: CompositionConfig = CompositionConfig(),
) -> Path:
    """Write the composition record of every PNG mask in a folder, in file order, as JSON Lines.

    The thresholds are CompositionConfig's fields (composition.config), given flat: --ring-pixels 3,
    ring_pixels: 3 in a config, main(..., ring_pixels=3).

    Args:
        masks: folder of single-channel PNG masks (group ids, or source ids with --source-ids).
        out: the JSON Lines file to write (one record a line, atomically).
        classes: class table name (seed10, aerial10) or path to its YAML file.
        scenes: the scene head's scenes.json (segcap.scenes/1, keyed by mask stem) whose top scenes go into each
            record; auto: MASKS/scenes.json when that file exists; null: no scenes.
        source_ids: the masks hold the drone dataset's 24 source ids (ground truth); group them with the table first.
        image_suffix: appended to the mask's stem to give the record's "image" (the caption set's filename).
        workers: worker processes (0 = this process); order is kept either way.
        strict: stop at the first bad mask (exit code 2) instead of reporting it and going on.
        overwrite: replace an existing output file.
    """


    cfg = thresholds
    table = load_class_table(classes)
    check_writable(out, overwrite, "compositions file")
    if not Path(masks).is_dir():
        raise DatasetNotFoundError(f"mask folder not found: {masks}; pass --masks a folder of PNG masks")
    files = list_images(masks, (".png",))
    if not files:
        raise DatasetNotFoundError(f"no PNG masks in {masks}; pass --masks a folder of single-channel PNG masks")
    by_stem = _scenes_of(files, masks, scenes)

    work = partial(_one, table=table, source_ids=source_ids, image_suffix=image_suffix, cfg=cfg)
    records, bad, errors = [], [], []
    bar = Progress(total=len(files), desc="compositions", unit="mask")
    pool = None
    try:
        if workers > 0:
            import multiprocessing as mp

            pool = mp.get_context("spawn").Pool(workers)
            results = pool.imap(work, files, chunksize=max(1, min(64, len(files) // (4 * workers) or 1)))
        else:
            results = map(work, files)
        for path, (record, error) in zip(files, results, strict=True):
            bar.update()
            if error is not None:
                if strict:
                    raise DataError(f"{error} (stopped by --strict; {len(records)} masks done, nothing written)")
                bad.append(path)
                errors.append(error)
                bar.write(f"skipped: {error}")
                continue
            records.append(record if by_stem is None else with_scenes(record, by_stem[path.stem], str(path)))
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    if not records:  # every mask failed: a batch with nothing done is an error (exit 2), not an empty file
        raise DataError(f"all {len(bad)} masks in {masks} failed, e.g. {errors[0]}; nothing written to {out}. "
                        "Pass a folder of single-channel PNG masks (segmentation.predict writes them)")
    write_jsonl(out, records)
    print(f"wrote {len(records)} records to {out}" + (f"; skipped {len(bad)} bad masks" if bad else "")
          + ("" if by_stem is None else "; with scenes"), file=sys.stderr)
    return Path(out)


def _scenes_of(files: list[Path], masks: Path, scenes: str | Path | None) -> dict[str, list[dict]] | None:
    """{mask stem: scenes} for every mask of ``files`` from the scenes file (None: no scenes), or one DataError
    naming the file and the first masks it lacks."""
    if scenes is None or str(scenes) == "auto" and not (Path(masks) / "scenes.json").is_file():
        return None
    path = Path(masks) / "scenes.json" if str(scenes) == "auto" else Path(scenes)
    by_stem = read_scenes(path)
    missing = [p.stem for p in files if p.stem not in by_stem]
    if missing:
        few = ", ".join(missing[:5]) + (f" (and {len(missing) - 5} more)" if len(missing) > 5 else "")
        raise DataError(f"{path}: no scenes for {len(missing)} of the {len(files)} masks in {masks}: {few}; predict "
                        "the scenes of the same images (segmentation.predict writes both), or pass --scenes null")
    return by_stem


if __name__ == "__main__":

    run(main)
