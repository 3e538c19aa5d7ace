"""The stages of :mod:`pipeline.archive` as Ray Data runs them: read (tasks) -> segment (actors) -> compose (tasks)
-> caption (actors). Each takes and returns a pyarrow table of tiles, one row a tile. This module holds the rows'
schemas and the two task stages, which need neither torch nor transformers (a task's worker imports only this);
the model actors are in :mod:`pipeline.archive_segment` and :mod:`pipeline.archive_caption`.

A row starts as the job's plan (``key``, ``kind`` scene or image, ``source``, ``scene``, ``tile``, the window and
the size it is read at) and gains, stage by stage: ``status`` (ok, nodata: every pixel nodata, error: unreadable),
``message``, the pixels and their valid mask (read), the group-id mask and scene-head scenes (segment), the
composition record as JSON (compose), the caption (caption). Pixels and masks leave the rows as soon as the next
stage has used them.

Each tile is segmented and described exactly as :mod:`pipeline.caption` does one image (``Segmenter.predict`` on
the tile alone at scale 1, ``composition.extract.extract`` with the image's name, ``Captioner.caption`` on the
records): the same tile gives the same caption. Nodata pixels of a partly covered tile are ``unlabeled`` in its mask.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from aerialdata.classes import class_table_from_dict
from aerialdata.images import read_rgb
from aerialdata.raster import SceneInfo, Tile, read_tile
from composition.extract import extract
from segcap.errors import SegcapError

try:  # the `scale` extra; pipeline.archive names it when it is missing
    import pyarrow as pa
except ImportError:  # pragma: no cover
    pa = None

UNLABELED = 0  # the group id nodata pixels get

PLAN_FIELDS = [("key", "string"), ("kind", "string"), ("source", "string"), ("scene", "string"), ("tile", "string"),
               ("row", "int32"), ("col", "int32"), ("x", "int64"), ("y", "int64"), ("w", "int32"), ("h", "int32"),
               ("out_w", "int32"), ("out_h", "int32")]
STATUS_FIELDS = [("status", "string"), ("message", "string"), ("nodata_percent", "float64"),
                 ("px_w", "int32"), ("px_h", "int32")]
READ_FIELDS = [*PLAN_FIELDS, *STATUS_FIELDS, ("pixels", "binary"), ("valid", "binary")]
SEGMENT_FIELDS = [*PLAN_FIELDS, *STATUS_FIELDS, ("valid", "binary"), ("mask", "binary"), ("scenes", "string")]
COMPOSE_FIELDS = [*PLAN_FIELDS, *STATUS_FIELDS, ("composition", "string")]
CAPTION_FIELDS = [*COMPOSE_FIELDS, ("caption", "string")]


def schema(fields: list[tuple[str, str]]):
    return pa.schema([(name, getattr(pa, kind)()) for name, kind in fields])


def table(rows: list[dict], fields: list[tuple[str, str]]):
    """Rows as a pyarrow table of exactly ``fields`` (missing values null), so every block has one schema."""
    names = [n for n, _ in fields]
    return pa.Table.from_pylist([{n: r.get(n) for n in names} for r in rows], schema=schema(fields))


def record_name(row: dict) -> str:
    """The ``image`` of a tile's composition record: an image's file name (as pipeline.caption records it), a scene
    tile's ``<scene stem>_r<row>_c<col>``."""
    return Path(row["source"]).name if row["kind"] == "image" else f"{Path(row['source']).stem}_{row['tile']}"


# ---------------------------------------------------------------- read (tasks)
def scene_infos(scenes: dict[str, dict]) -> dict[str, SceneInfo]:
    """:class:`SceneInfo` objects from their dicts (as the plan sends them to the workers)."""
    return {k: SceneInfo(**{**v, "bands": tuple(v["bands"]), "transform": tuple(v["transform"]),
                            "stretch": tuple(v["stretch"]) if v["stretch"] else None}) for k, v in scenes.items()}


def read_batch(batch, scenes: dict[str, dict]):
    """Read a batch of tiles: scene windows (:func:`aerialdata.raster.read_tile`) or image files
    (:func:`aerialdata.images.read_rgb`, as pipeline.caption reads them). Run as Ray tasks."""
    infos = scene_infos(scenes)
    return table([read_row(r, infos) for r in batch.to_pylist()], READ_FIELDS)


def read_row(row: dict, scenes: dict[str, SceneInfo]) -> dict:
    try:
        if row["kind"] == "image":
            rgb, valid = read_rgb(row["source"]), None
        else:
            t = Tile(row["row"], row["col"], row["x"], row["y"], row["w"], row["h"], row["out_w"], row["out_h"])
            rgb, valid = read_tile(scenes[row["scene"]], t)
    except (SegcapError, OSError) as e:  # rasterio's read errors are OSErrors
        where = "" if row["kind"] == "image" else f"{row['source']} tile {row['tile']}: "  # an image's error names it
        return {**row, "status": "error", "message": f"{where}{e}"}
    h, w = rgb.shape[:2]
    out = {**row, "px_w": w, "px_h": h, "nodata_percent": 0.0}
    if valid is not None and not valid.all():
        out["nodata_percent"] = round(100.0 * (1 - float(valid.mean())), 3)
        if not valid.any():
            return {**out, "status": "nodata"}
        out["valid"] = np.packbits(valid).tobytes()
    return {**out, "status": "ok", "pixels": rgb.tobytes()}


def valid_mask(row: dict) -> np.ndarray | None:
    if row.get("valid") is None:
        return None
    n = row["px_h"] * row["px_w"]
    return np.unpackbits(np.frombuffer(row["valid"], np.uint8), count=n).astype(bool).reshape(row["px_h"],
                                                                                                row["px_w"])


# ---------------------------------------------------------------- compose (tasks)
def compose_batch(batch, classes: dict):
    """Each tile's composition record (JSON), as pipeline.caption makes it, with the checkpoint's class table
    (``classes``: its config.yaml's). Run as Ray tasks."""
    table_ = class_table_from_dict(classes)
    out = []
    for row in batch.to_pylist():
        if row["status"] == "ok":
            mask = np.frombuffer(row["mask"], np.uint8).reshape(row["px_h"], row["px_w"])
            scenes = json.loads(row["scenes"]) if row["scenes"] else None
            record = extract(mask, table_, image=record_name(row), scenes=scenes)
            row = {**row, "composition": json.dumps(record, ensure_ascii=False)}
        out.append(row)
    return table(out, COMPOSE_FIELDS)


