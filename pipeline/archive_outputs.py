"""What :mod:`pipeline.archive` writes: parts as the tiles come, then the GeoParquet, the GeoJSON and the overviews.

- ``parts/part-*.parquet``: the tiles in the order they were finished, written whole (temporary file + rename) every
  few hundred tiles; a rerun reads their ``key`` column and skips those tiles. Tiles whose every pixel is nodata are
  written too (status ``nodata``: done, never captioned); unreadable tiles are not (a rerun tries them again).
- ``tiles.parquet``: GeoParquet, one row a captioned tile in scene and grid order (:func:`geo_frame` lists the
  columns), with a bounding-box covering column for GIS readers.
- ``tiles.geojson``: the same rows in EPSG:4326, for small jobs.
- ``overviews/<scene>.png``: the dominant class of each tile over the scene, and a few captions where they belong.
"""

from __future__ import annotations

import json
import re
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np

from aerialdata.classes import ClassTable
from aerialdata.raster import SceneInfo, Tile, footprint, thumbnail
from pipeline.archive_stages import CAPTION_FIELDS, schema
from segcap import atomic

try:  # the `scale` extra; pipeline.archive names it when it is missing
    import geopandas as gpd
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely
except ImportError:  # pragma: no cover
    gpd = pa = pq = shapely = None

PARTS = "parts"
TILES = "tiles.parquet"
GEOJSON = "tiles.geojson"
OVERVIEWS = "overviews"
GEOJSON_AUTO_MAX = 10_000  # --geojson auto writes the GeoJSON up to this many tiles
PART_COLUMNS = [n for n, _ in CAPTION_FIELDS]


# ---------------------------------------------------------------- parts
def write_part(out: Path, rows) -> Path:
    """Write finished rows (a pyarrow table of :data:`CAPTION_FIELDS`) as one new part, atomically."""
    name = f"part-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}.parquet"
    path = out / PARTS / name
    with atomic.atomic_path(path) as tmp:
        pq.write_table(rows.select(PART_COLUMNS), tmp, compression="zstd")
    return path


def part_files(out: Path) -> list[Path]:
    folder = out / PARTS
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def done_keys(out: Path) -> set[str]:
    """The keys of the tiles every part holds (done: captioned or all nodata)."""
    keys: set[str] = set()
    for p in part_files(out):
        keys.update(pq.read_table(p, columns=["key"]).column("key").to_pylist())
    return keys


def read_rows(out: Path, keys: set[str]):
    """The part rows of ``keys`` (one per key, the last written), as a pyarrow table."""
    tables = [pq.read_table(p) for p in part_files(out)]
    if not tables:
        return pa.Table.from_pylist([], schema=schema(CAPTION_FIELDS))
    rows = pa.concat_tables([t.select(PART_COLUMNS).cast(schema(CAPTION_FIELDS)) for t in tables])
    seen: dict[str, int] = {}
    for i, k in enumerate(rows.column("key").to_pylist()):
        if k in keys:
            seen[k] = i
    return rows.take(sorted(seen.values()))


# ---------------------------------------------------------------- the GeoParquet
def class_column(name: str) -> str:
    """``pct_<name>``: a class's percent column (``pct_artificial_surface``)."""
    return "pct_" + re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def geo_frame(rows, scenes: dict[str, SceneInfo], table: ClassTable, order: list[str], models: dict,
              target_gsd: float | None):
    """One row a captioned tile, in ``order`` (the plan's keys): a GeoDataFrame whose geometry is each tile's
    footprint in its scene's CRS (EPSG:4326 when the scenes' CRSs differ; none for plain tiles and scenes without a
    CRS). Columns: source, scene, tile, row, col, x, y, width, height (the window in scene pixels), tile_width,
    tile_height (pixels as segmented), gsd (metres per tile pixel), crs, nodata_percent, dominant,
    dominant_percent, one ``pct_<class>`` per class of the table (0 when absent), caption, composition (the
    record as JSON), segmentation, llm (the models' folders), key."""
    ok = [r for r in rows.to_pylist() if r["status"] == "ok"]
    rank = {k: i for i, k in enumerate(order)}
    ok.sort(key=lambda r: rank.get(r["key"], len(rank)))
    crss = {scenes[r["scene"]].crs for r in ok if r["kind"] == "scene" and scenes[r["scene"]].crs}
    common = next(iter(crss)) if len(crss) == 1 else ("EPSG:4326" if crss else None)
    records, geoms = [], []
    for r in ok:
        rec = json.loads(r["composition"])
        pct = {class_column(n): 0.0 for n in table.names}
        for c in rec["classes"]:
            pct[class_column(c["name"])] = float(c["percent"])
        info = scenes.get(r["scene"]) if r["kind"] == "scene" else None
        geom = None
        if info is not None and info.crs:
            t = Tile(r["row"], r["col"], r["x"], r["y"], r["w"], r["h"], r["out_w"], r["out_h"])
            geom = shapely.Polygon(footprint(info, t))
            if common != info.crs:
                geom = gpd.GeoSeries([geom], crs=info.crs).to_crs(common).iloc[0]
        geoms.append(geom)
        scene_tile = r["kind"] == "scene"
        records.append({
            "source": r["source"], "scene": Path(r["source"]).name if scene_tile else Path(r["source"]).parent.name,
            "tile": r["tile"], "row": r["row"] if scene_tile else None, "col": r["col"] if scene_tile else None,
            "x": r["x"] if scene_tile else None, "y": r["y"] if scene_tile else None,
            "width": r["w"] if scene_tile else r["px_w"], "height": r["h"] if scene_tile else r["px_h"],
            "tile_width": r["px_w"], "tile_height": r["px_h"],
            "gsd": (target_gsd if info is not None and info.gsd else None),
            "crs": info.crs if info is not None else None, "nodata_percent": r["nodata_percent"],
            "dominant": rec["classes"][0]["name"], "dominant_percent": float(rec["classes"][0]["percent"]), **pct,
            "caption": r["caption"], "composition": r["composition"], **models, "key": r["key"]})
    columns = list(records[0]) if records else ["source", "scene", "tile", "caption", "key"]
    frame = gpd.GeoDataFrame(records, columns=columns, geometry=gpd.GeoSeries(geoms, crs=common), crs=common)
    for c in ("row", "col", "x", "y"):
        if c in frame:
            frame[c] = frame[c].astype("Int64")
    return frame


def write_geoparquet(frame, path: Path) -> Path:
    with atomic.atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False, compression="zstd", write_covering_bbox=True)
    return path


def write_geojson(frame, path: Path) -> Path | None:
    """The rows with a footprint, in EPSG:4326 (as GeoJSON wants); None when no row has one."""
    located = frame[frame.geometry.notna()]
    if located.empty or frame.crs is None:
        return None
    with atomic.atomic_path(path) as tmp:
        located.to_crs("EPSG:4326").to_file(tmp, driver="GeoJSON")
    return path


# ---------------------------------------------------------------- overviews
def overview_name(info: SceneInfo, taken: set[str]) -> str:
    stem, n = Path(info.name).stem, 1
    name = f"{stem}.png"
    while name in taken:
        n += 1
        name = f"{stem}-{n}.png"
    taken.add(name)
    return name


def draw_overview(info: SceneInfo, frame, table: ClassTable, path: Path, captions: int = 6,
                  max_side: int = 1024) -> Path:
    """The scene (decimated) under its tiles coloured by dominant class, a legend, and up to ``captions`` captions
    drawn at their tiles: for the most frequent dominant classes in turn, the tile nearest the middle of that class's
    tiles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rgb, f = thumbnail(info, max_side)
    h, w = rgb.shape[:2]
    colours = np.zeros_like(rgb)
    painted = np.zeros((h, w), bool)
    names = table.names
    rows = frame[(frame["source"] == info.path)]
    for _, r in rows.iterrows():
        y0, x0 = int(r["y"] * f), int(r["x"] * f)
        y1, x1 = max(y0 + 1, int(round((r["y"] + r["height"]) * f))), max(x0 + 1, int(round((r["x"] + r["width"]) * f)))
        colours[y0:y1, x0:x1] = table.colors[names.index(r["dominant"])]
        painted[y0:y1, x0:x1] = True
    blend = rgb.astype(np.float32)
    blend[painted] = 0.45 * blend[painted] + 0.55 * colours[painted]
    if len(rows) and (rows["width"].min() * f) >= 16:  # the tiles' edges, where they are large enough to see
        for _, r in rows.iterrows():
            y0, x0 = int(r["y"] * f), int(r["x"] * f)
            y1 = min(h, int(round((r["y"] + r["height"]) * f))) - 1
            x1 = min(w, int(round((r["x"] + r["width"]) * f))) - 1
            blend[[y0, y1], x0 : x1 + 1] = 255 * 0.6 + blend[[y0, y1], x0 : x1 + 1] * 0.4
            blend[y0 : y1 + 1, [x0, x1]] = 255 * 0.6 + blend[y0 : y1 + 1, [x0, x1]] * 0.4
    fig_w = 10.0
    fig, ax = plt.subplots(figsize=(fig_w, fig_w * h / w + 0.9), dpi=110)
    ax.imshow(blend.astype(np.uint8))
    ax.set_axis_off()
    counts = Counter(rows["dominant"])
    ax.legend(handles=[Patch(color=table.colors[names.index(n)] / 255, label=f"{n} ({k})")
                       for n, k in counts.most_common()], loc="upper center", bbox_to_anchor=(0.5, -0.01),
              ncol=min(4, max(1, len(counts))), fontsize=8, frameon=False)
    for r in _chosen(rows, counts, captions):
        cx, cy = (r["x"] + r["width"] / 2) * f, (r["y"] + r["height"] / 2) * f
        ax.plot([cx], [cy], "o", ms=4, mec="black", mfc="white")
        left = cx > w / 2  # the text towards the middle, so it stays on the picture
        text = "\n".join(textwrap.wrap(r["caption"], 28, max_lines=3, placeholder=" ...")) or "(empty)"
        ax.annotate(text, (cx, cy), xytext=(-6 if left else 6, 6), textcoords="offset points", fontsize=7,
                    va="bottom", ha="right" if left else "left",
                    bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.3", "alpha": 0.85})
    ax.set_title(f"{info.name}: dominant class of {len(rows)} tiles", fontsize=10)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def _chosen(rows, counts: Counter, k: int) -> list:
    """Up to ``k`` tiles whose captions are drawn: for each dominant class (most frequent first) the tile nearest the
    middle of that class's tiles; then, while fewer than ``k``, the tile farthest from those chosen."""
    if rows.empty or k <= 0:
        return []
    cx, cy = (rows["x"] + rows["width"] / 2).to_numpy(float), (rows["y"] + rows["height"] / 2).to_numpy(float)
    dominant = rows["dominant"].to_numpy()
    picked: list[int] = []
    for name, _ in counts.most_common(k):
        idx = np.flatnonzero(dominant == name)
        d = (cx[idx] - cx[idx].mean()) ** 2 + (cy[idx] - cy[idx].mean()) ** 2
        picked.append(int(idx[np.argmin(d)]))
    while len(picked) < min(k, len(rows)):
        d = np.min([(cx - cx[i]) ** 2 + (cy - cy[i]) ** 2 for i in picked], axis=0)
        picked.append(int(np.argmax(d)))
    return [rows.iloc[i] for i in picked]
