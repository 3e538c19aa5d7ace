"""Labelled segmentation sources: what a config declares (:class:`SourceSpec`), what every reader offers
(:class:`LabelledSource`), and :func:`open_source`, which opens one.

Sources and their readers (each in its own published layout; masks come out as group ids of the class table, with
:data:`IGNORE` (255) where the source labels nothing)::

    kind          reader                                   class map (configs/classes/maps/)   gsd (m/px) if not given
    drone         aerialdata.drone.DroneDataset            the class table itself              synthetic marker, else None
    loveda        aerialdata.loveda.LoveDA                 loveda.yaml                         0.3
    openearthmap  aerialdata.openearthmap.OpenEarthMap     openearthmap.yaml                   0.5
    folder        aerialdata.folder.FolderSource           required (example_folder.yaml)      required

The kinds are one table, :data:`SOURCE_KINDS` (kind -> reader, layout, whether it takes a class map), from which
:data:`KINDS`, the ``Kind`` choices of a config and :func:`open_source` follow. Adding a kind: its reader module (a
:class:`aerialdata.labelled.PairedSource` subclass, ``name`` the kind), one entry below, and its class map
``configs/classes/maps/<kind>.yaml`` (a reader of a kind with a shipped map refuses a map written for another source).

Usage::

    from aerialdata.sources import SourceSpec, open_source
    src = open_source(SourceSpec("loveda", Path("/data/LoveDA")), "aerial10")
    image, mask = src.load(0, scale=src.gsd / 1.0)     # to a caption set at 1 m per pixel
    mask[mask == IGNORE]                                # no-data and LoveDA's background: left out of the loss

Class maps are YAML data targeting group names (``seed10`` and ``aerial10`` share them, so one map serves both)::

    source: loveda
    gsd: 0.3
    classes:                     # source id: [source class name, group name or ignore]
      0: [no-data, ignore]
      2: [building, building]

Why hand-written readers and not torchgeo's dataset classes (checked against torchgeo's main branch, Aug 2025):
importing any torchgeo dataset imports ``torchgeo.datasets.geo``, which imports torch, torchvision, rasterio (GDAL),
fiona, geopandas, pandas, pyproj and shapely, and the package requires lightning, lightly, kornia and torchmetrics as
well: a second geospatial stack of compiled wheels in the one pip resolve, and torch in a data layer that
``synthetic``, ``evaluation`` and ``llm`` import without it. It has a LoveDA class (whole 1024x1024 tensors, no class
map, no scale) but no OpenEarthMap one. So each source is one small reader here on Pillow/OpenCV, in torchgeo's style
(one class per source, expected folders as class attributes, ``_verify()`` raising a ``DatasetNotFoundError`` subclass
that names the root and how to get the data); OpenEarthMap's GeoTIFFs need no GDAL (their geo tags are not used).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from aerialdata.classes import ClassTable, load_class_table
from aerialdata.drone import DroneDataset
from aerialdata.folder import FolderSource
from aerialdata.labelled import (
    CLASS_MAP_DIR,
    IGNORE,
    SYNTHETIC_MARKER,
    ClassMap,
    PairedSource,
    class_map_path,
    load_class_map,
    read_synthetic_marker,
)
from aerialdata.loveda import LoveDA
from aerialdata.openearthmap import OpenEarthMap
from segcap.errors import ConfigError, SegcapError
from segcap.options import PositiveFloat

__all__ = [
    "CLASS_MAP_DIR", "IGNORE", "KINDS", "SOURCE_KINDS", "SYNTHETIC_MARKER", "ClassMap", "LabelledSource",
    "PairedSource", "SourceKind", "SourceSpec", "as_spec", "class_map_path", "load_class_map", "open_source",
    "read_synthetic_marker", "source_problems",
]


@dataclass(frozen=True)
class SourceKind:
    """One kind of labelled source: its reader and what a config may give it."""

    reader: Callable[..., LabelledSource]  # its class: reader(root, table, gsd=..., class_map=... if it takes one)
    layout: str  # what its root holds, for the message about a root that is a file
    no_class_map: str | None = None  # why it takes no class_map (it maps its classes itself); None: it takes one

    @property
    def name(self) -> str:
        """The kind: the reader's ``name``."""
        return self.reader.name  # type: ignore[attr-defined]

    @property
    def takes_class_map(self) -> bool:
        return self.no_class_map is None


SOURCE_KINDS: dict[str, SourceKind] = {k.name: k for k in (
    SourceKind(DroneDataset, "original_images/ and label_images_semantic/",
               no_class_map="the drone set maps its 24 classes through the class table (--classes)"),
    SourceKind(LoveDA, "Train/ and Val/, as LoveDA's zips unpack"),
    SourceKind(OpenEarthMap, "one folder per region, each with images/ and labels/"),
    SourceKind(FolderSource, "images/ and masks/"),
)}
KINDS: tuple[str, ...] = tuple(SOURCE_KINDS)
Kind = Literal[KINDS]  # a config's kind: one of KINDS


@dataclass(frozen=True)
class SourceSpec:
    """One labelled segmentation source, as a config declares it (segmentation.train's ``sources:`` list items).

    Args:
        kind: the source's layout (a reader of :data:`SOURCE_KINDS`).
        root: the dataset folder, in that layout.
        gsd: ground resolution in metres per pixel; null: the reader's published value (loveda 0.3, openearthmap
            0.5), or the synthetic marker's; drone and folder sets need it unless synthetic (folder: or in its map).
        class_map: YAML mapping the source's class ids to group names; null: configs/classes/maps/<kind>.yaml
            (folder: required; drone: none, it maps through the class table).
    """

    kind: Kind
    root: Path
    gsd: PositiveFloat | None = None
    class_map: Path | None = None

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))
        if self.class_map is not None:
            object.__setattr__(self, "class_map", Path(self.class_map))


@runtime_checkable
class LabelledSource(Protocol):
    """What every reader (DroneDataset included) offers."""

    name: str                   # its kind: one of KINDS
    root: Path
    gsd: float | None           # metres per pixel (None only for a drone/folder set whose gsd was not given)
    synthetic: bool             # True when the set was written by synthetic.generate (marker file)
    table: ClassTable
    provides: tuple[int, ...]   # group ids this source can label; every other group is IGNORE in its masks
    stems: list[str]
    image_paths: list[Path]
    mask_paths: list[Path]
    splits: list[str] | None    # per item "train"/"val"/"test" when the source publishes a split, else None

    def __len__(self) -> int: ...

    def size(self, i: int) -> tuple[int, int]:
        """(width, height) at full size."""
        ...

    def load(self, i: int, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8 RGB and (H, W) uint8 group ids (IGNORE where not labelled), both resized by scale."""
        ...


def as_spec(item: SourceSpec | dict | object) -> SourceSpec:
    """A ``sources`` item as a :class:`SourceSpec`: as given, or from the mapping a config holds (a typed check
    gives a namespace with ``as_dict``). Its keys are checked before (:func:`segcap.options.check_options`)."""
    if isinstance(item, SourceSpec):
        return item
    raw = item.as_dict() if hasattr(item, "as_dict") else dict(item)  # type: ignore[call-overload]
    return SourceSpec(kind=raw["kind"], root=Path(raw["root"]), gsd=raw.get("gsd"),
                      class_map=Path(raw["class_map"]) if raw.get("class_map") else None)


def source_problems(items, table: ClassTable | str | Path) -> list[str]:
    """Every problem with the files of the sources listed (``sources[k]: ...``), as training would meet them: a root
    that is missing or a file, a layout without its folders, a class map that does not load, no ground resolution.
    Each source is opened (its files listed, no image decoded): a caller checks them all before any work."""
    out = []
    for k, item in enumerate(items or []):
        try:
            src = open_source(as_spec(item), table)
        except SegcapError as e:
            out.append(f"sources[{k}]: {e}")
            continue
        if src.gsd is None:
            out.append(f"sources[{k}]: {src.name} ({src.root}) states no ground resolution; give gsd (metres per "
                       f"pixel) in its entry, e.g. {{kind: {src.name}, root: {src.root}, gsd: 0.05}}")
    return out


def open_source(spec: SourceSpec, table: ClassTable | str | Path) -> LabelledSource:
    """Open the source ``spec`` declares, its masks mapped to ``table``'s groups.

    Raises :class:`ConfigError` for an unknown kind, a bad gsd or class map, and the reader's
    ``DatasetNotFoundError`` subclass when the root or its folders are missing.
    """
    table = table if isinstance(table, ClassTable) else load_class_table(table)
    where = f"source {spec.kind} {spec.root}"
    kind = SOURCE_KINDS.get(spec.kind)
    if kind is None:
        close = difflib.get_close_matches(str(spec.kind), KINDS, n=1)
        raise ConfigError(f"source kind {spec.kind!r} is unknown; use one of {', '.join(KINDS)}"
                          + (f" (did you mean {close[0]}?)" if close else ""))
    if spec.root.exists() and not spec.root.is_dir():
        raise ConfigError(f"{where}: root {spec.root} is a file, not a folder; give the folder that holds the "
                          f"{spec.kind} set in its published layout ({kind.layout})")
    if spec.class_map is not None and spec.class_map.is_dir():
        raise ConfigError(f"{where}: class_map {spec.class_map} is a folder, not a file; give a class map YAML "
                          f"(e.g. {CLASS_MAP_DIR}/example_folder.yaml), or leave class_map out for the shipped one")
    if not kind.takes_class_map:
        if spec.class_map is not None:
            raise ConfigError(f"{where}: class_map {spec.class_map} is not used: {kind.no_class_map}; leave "
                              "class_map out")
        return kind.reader(spec.root, table, gsd=spec.gsd)
    return kind.reader(spec.root, table, class_map=spec.class_map, gsd=spec.gsd)
