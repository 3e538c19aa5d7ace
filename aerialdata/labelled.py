"""What the labelled segmentation readers share: the ignore value, class maps, the synthetic marker, the paired reader.

- :data:`IGNORE` (255): the mask value of a pixel the source does not label (no-data, or a class no group takes).
- Class maps (``configs/classes/maps/<kind>.yaml``) are data: each source id names its class and the group it lands in
  (a group name of the class table, or ``ignore``). :func:`load_class_map` checks one against a class table and turns
  it into a lookup table; every problem is reported together, naming the file, the entry and the valid group names.
- The synthetic marker ``segcap_synthetic.json``, written by ``synthetic.generate`` in the root of each set, says that
  a set is synthetic and states its ground resolution (``gsd``, metres per pixel).
- :class:`PairedSource`: the reader behind LoveDA, OpenEarthMap and the generic folder reader, one image file and one
  mask file of source ids per item; subclasses say where the files are (:meth:`PairedSource._verify`,
  :meth:`PairedSource._find`).

:mod:`aerialdata.sources` re-exports the public names; import them from there.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from aerialdata.classes import ClassTable, load_class_table
from aerialdata.images import image_size, read_mask, read_rgb_scaled, resize_mask
from segcap.errors import ConfigError, DataError, DatasetNotFoundError
from segcap.resources import config_path, looked_for, shipped

IGNORE = 255  # mask value: not labelled by this source (no-data, or a class the source cannot tell apart)
SYNTHETIC_MARKER = "segcap_synthetic.json"  # written by synthetic.generate in the root of each set
CLASS_MAP_DIR = shipped("classes", "maps")  # the shipped class maps (configs/classes/maps/ in a clone)
IGNORE_NAME = "ignore"  # the target of a source class that no group takes
SPLIT_NAMES = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------------- class maps
@dataclass(frozen=True)
class ClassMap:
    """A source's class map, checked against one class table.

    ``targets[source_id]`` is the group id the class lands in, or :data:`IGNORE`.
    """

    path: Path
    source: str
    gsd: float | None
    names: dict[int, str]
    targets: dict[int, int]
    table_name: str

    @cached_property
    def lut(self) -> np.ndarray:
        """(256,) uint8: source id -> group id (IGNORE for ignored classes and for ids the map does not list)."""
        lut = np.full(256, IGNORE, dtype=np.uint8)
        for sid, gid in self.targets.items():
            lut[sid] = gid
        return lut

    @cached_property
    def known(self) -> np.ndarray:
        """(256,) bool: True for the source ids the map lists."""
        known = np.zeros(256, dtype=bool)
        known[list(self.targets)] = True
        return known

    @property
    def provides(self) -> tuple[int, ...]:
        """Group ids some source class lands in, ascending."""
        return tuple(sorted({g for g in self.targets.values() if g != IGNORE}))

    def apply(self, source_mask: np.ndarray, where: str | Path = "mask") -> np.ndarray:
        """(H, W) uint8 source ids -> (H, W) uint8 group ids (IGNORE where not labelled).

        Raises :class:`DataError` naming ``where`` when the mask holds ids the map does not list.
        """
        source_mask = np.asarray(source_mask, dtype=np.uint8)
        if not self.known[source_mask].all():
            bad = sorted(int(v) for v in np.unique(source_mask[~self.known[source_mask]]))
            raise DataError(
                f"{where}: mask holds class id(s) {bad[:10]} that the class map {self.path} does not list "
                f"(it lists {sorted(self.targets)}); add them to the map (as a group name or 'ignore'), "
                "or check that the masks are single-channel images of this source's class ids"
            )
        return self.lut[source_mask]


def class_map_path(kind: str) -> Path:
    """The shipped class map of a source kind: ``configs/classes/maps/<kind>.yaml``."""
    return CLASS_MAP_DIR / f"{kind}.yaml"


def load_class_map(path: str | Path | None, table: ClassTable | str | Path, kind: str | None = None) -> ClassMap:
    """Read a class map YAML and check it against ``table``.

    Args:
        path: the YAML file; None: the shipped map of ``kind`` (``configs/classes/maps/<kind>.yaml``).
        table: the class table whose group names the map targets.
        kind: the reader asking (``loveda``, ``openearthmap``, ``folder``); the reader of a kind with a shipped
            map (``configs/classes/maps/<kind>.yaml``: LoveDA, OpenEarthMap) refuses a map whose ``source`` is
            another, so that LoveDA ids are never read through OpenEarthMap's map (the folder reader takes any).
    """
    table = table if isinstance(table, ClassTable) else load_class_table(table)
    if path is None:
        if kind is None:
            raise ConfigError("a class map needs a path or a source kind")
        path = class_map_path(kind)
    given, path = path, config_path(path)
    if not path.is_file():
        maps = ", ".join(sorted(f"configs/classes/maps/{p.name}" for p in CLASS_MAP_DIR.glob("*.yaml")))
        raise ConfigError(
            f"class map {given} not found; {looked_for(given)}; give a YAML file mapping source ids to group names "
            f"(shipped maps: {maps}, in {CLASS_MAP_DIR}; configs/classes/maps/example_folder.yaml documents the format)"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    return class_map_from_dict(raw, table, where=path, kind=kind)


def class_map_from_dict(raw: object, table: ClassTable, where: Path, kind: str | None = None) -> ClassMap:
    """Build and check a :class:`ClassMap`; every problem is reported together."""
    groups = {name.lower(): i for i, name in enumerate(table.names)}
    valid = ", ".join([*table.names, IGNORE_NAME])
    if not isinstance(raw, dict) or not isinstance(raw.get("classes"), dict) or not raw["classes"]:
        raise ConfigError(
            f"{where}: expected a mapping with 'source', optional 'gsd' and a non-empty 'classes' mapping "
            "(source id: [source class name, group name or ignore])"
        )
    problems: list[str] = []
    source = str(raw.get("source", kind or Path(str(where)).stem))
    if kind is not None and source != kind and class_map_path(kind).is_file():  # a kind with its own map
        problems.append(f"source: the map is for {source!r} but it was given to the {kind} reader; "
                        f"use configs/classes/maps/{kind}.yaml or a map written for {kind}")
    gsd = raw.get("gsd")
    if gsd is not None and not _positive_number(gsd):
        problems.append(f"gsd: {gsd!r} is not a ground resolution; give metres per pixel (e.g. 0.3) or leave it out")
        gsd = None
    names: dict[int, str] = {}
    targets: dict[int, int] = {}
    for key, value in raw["classes"].items():
        try:
            sid = int(key)
            if isinstance(key, bool) or sid != float(key) or not 0 <= sid <= 254:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"classes: key {key!r} is not a class id 0..254 (255 is the ignore value)")
            continue
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
            problems.append(f"classes: {sid}: expected [source class name, group name or ignore], got {value!r}")
            continue
        cname, target = value[0].strip(), value[1].strip()
        if target.lower() == IGNORE_NAME:
            gid = IGNORE
        elif target.lower() in groups:
            gid = groups[target.lower()]
        else:
            problems.append(f"classes: {sid} ({cname}): unknown group {target!r}; valid: {valid}")
            continue
        names[sid], targets[sid] = cname, gid
    if problems:
        raise ConfigError([f"{where}: {p}" for p in problems])
    return ClassMap(path=Path(where), source=source, gsd=float(gsd) if gsd is not None else None, names=names,
                    targets=targets, table_name=table.name)


def _positive_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


# ---------------------------------------------------------------------------------------------------- marker, gsd
def read_synthetic_marker(root: str | Path) -> dict | None:
    """The synthetic marker in ``root`` (``segcap_synthetic.json``) as a dict, or None when the set has none."""
    path = Path(root) / SYNTHETIC_MARKER
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); rewrite the set with synthetic.generate, or delete the file "
                        "if the set is not synthetic") from e
    if not isinstance(marker, dict):
        raise DataError(f"{path}: expected a JSON object with 'generator' and 'gsd' (metres per pixel)")
    if marker.get("gsd") is not None and not _positive_number(marker["gsd"]):
        raise DataError(f"{path}: gsd {marker['gsd']!r} is not a ground resolution in metres per pixel")
    return marker


def check_gsd(gsd: float | None, where: str = "gsd") -> float | None:
    """A given ground resolution: None, or a positive number (ConfigError otherwise)."""
    if gsd is None:
        return None
    if not _positive_number(gsd):
        raise ConfigError(f"{where}: {gsd!r} is not a ground resolution; give metres per pixel, e.g. 0.3")
    return float(gsd)


# ---------------------------------------------------------------------------------------------------- paired reader
class Item(NamedTuple):
    stem: str
    image: Path
    mask: Path
    split: str | None


class SourceNotFoundError(DatasetNotFoundError):
    """A labelled source's root, or one of its expected folders or files, is missing."""

    def __init__(self, title: str, root: Path, missing: Path | str, layout: str, fix: str):
        super().__init__(
            f"{title} not found: {missing} does not exist (searched root {root}). Expected {layout}. {fix}"
        )


class PairedSource:
    """A labelled segmentation source of image files with masks of source class ids, mapped to groups.

    Items are ``(image, mask)``: (H, W, 3) uint8 RGB and (H, W) uint8 group ids of the same size, IGNORE where the
    source labels nothing (its no-data, and classes its class map sends to ``ignore``).

    Subclasses set :attr:`name`, :attr:`title`, :attr:`published_gsd` and :attr:`split_names`, and implement
    :meth:`_verify` (raise a :class:`SourceNotFoundError` subclass naming the root, what is missing and how to get
    it) and :meth:`_find` (the items in a stable order).

    Args:
        root: the dataset folder, in the source's published layout.
        table: class table (a :class:`ClassTable`, or a name such as ``aerial10`` / a YAML path).
        class_map: class map YAML; None: ``configs/classes/maps/<name>.yaml``.
        gsd: ground resolution in metres per pixel; None: the synthetic marker's, else the class map's, else the
            source's published value.
        split: keep only the items of this published split; None keeps every labelled item.
        stems: keep only these stems, in this order (after ``split``); None keeps all.
    """

    name = ""
    title = ""
    published_gsd: float | None = None
    gsd_required = False
    split_names: tuple[str, ...] = SPLIT_NAMES

    def __init__(
        self,
        root: str | Path,
        table: ClassTable | str | Path = "aerial10",
        class_map: str | Path | None = None,
        gsd: float | None = None,
        split: str | None = None,
        stems: list[str] | None = None,
    ):
        self.root = Path(root)
        self.table = table if isinstance(table, ClassTable) else load_class_table(table)
        if split is not None and split not in self.split_names:
            valid = ", ".join(self.split_names) if self.split_names else "none (this source has no split lists)"
            raise ConfigError(f"{self.name} split {split!r} is not one of its splits; valid: {valid} "
                              "(or no split, for every labelled item)")
        self.class_map = load_class_map(class_map, self.table, kind=self.name)
        self._verify()
        marker = read_synthetic_marker(self.root)
        self.synthetic = marker is not None
        self.gsd = self._resolve_gsd(check_gsd(gsd, f"{self.name} source gsd"), marker)
        self.provides: tuple[int, ...] = self.class_map.provides
        self.skipped: list[tuple[str, str]] = []  # (file, why) of listed files left out, for the caller to report
        items = self._find()
        if split is not None:
            present = sorted({it.split for it in items if it.split})
            items = [it for it in items if it.split == split]
            if not items:
                raise ConfigError(f"{self.root}: no labelled {self.name} items in split {split!r}; "
                                  f"splits present: {', '.join(present) or 'none'}")
        seen: dict[str, Item] = {}
        for it in items:
            if it.stem in seen:
                raise DataError(f"{it.image}: has the same stem {it.stem!r} as {seen[it.stem].image}; stems must be "
                                "unique within a source (rename one)")
            seen[it.stem] = it
        if stems is not None:
            unknown = [s for s in stems if s not in seen]
            if unknown:
                raise DataError(f"{self.root}: no labelled {self.name} item with stem(s) {unknown[:5]}")
            items = [seen[s] for s in stems]
        self.stems: list[str] = [it.stem for it in items]
        self.image_paths: list[Path] = [it.image for it in items]
        self.mask_paths: list[Path] = [it.mask for it in items]
        self.splits: list[str] | None = [it.split for it in items] if any(it.split for it in items) else None

    def _resolve_gsd(self, given: float | None, marker: dict | None) -> float | None:
        if given is not None:
            return given
        if marker is not None and marker.get("gsd") is not None:
            return float(marker["gsd"])
        if self.class_map.gsd is not None:
            return self.class_map.gsd
        if self.published_gsd is not None:
            return self.published_gsd
        if self.gsd_required:
            raise ConfigError(
                f"{self.name} source {self.root}: no ground resolution; give gsd (metres per pixel) in the source "
                f"entry, or as 'gsd:' in its class map {self.class_map.path}"
            )
        return None

    # ---------------------------------------------------------------- to implement
    def _verify(self) -> None:
        raise NotImplementedError

    def _find(self) -> list[Item]:
        raise NotImplementedError

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.load(i)

    def size(self, i: int) -> tuple[int, int]:
        """(width, height) of image ``i`` at full size, from its header."""
        return image_size(self.image_paths[i])

    def load(self, i: int, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Image ``i`` and its group-id mask (IGNORE where not labelled), both resized by ``scale`` (None: full size).

        Raises :class:`DataError` naming the file for an unreadable image or mask, a mask whose size differs from its
        image, or mask ids that the class map does not list.
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        return load_pair(self.image_paths[i], self.mask_paths[i], self.class_map.apply, scale)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, gsd={self.gsd}, "
                f"table={self.table.name!r}, synthetic={self.synthetic})")


def load_pair(ipath: Path, mpath: Path, to_groups, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An image and its mask of source ids turned into group ids by ``to_groups(source, where=mpath)``, both resized
    by ``scale`` (None: full size); a mask whose size differs from its image is a :class:`DataError` naming both."""
    full = image_size(ipath)
    source = read_mask(mpath)
    if (source.shape[1], source.shape[0]) != full:
        raise DataError(
            f"{mpath}: mask is {source.shape[1]}x{source.shape[0]} but its image {ipath.name} is "
            f"{full[0]}x{full[1]}; masks must have the size of their image"
        )
    mask = to_groups(source, where=mpath)
    image = read_rgb_scaled(ipath, scale)
    return image, resize_mask(mask, (image.shape[1], image.shape[0]))


def read_split_lists(root: Path, names: tuple[str, ...] = SPLIT_NAMES) -> dict[str, str] | None:
    """``<root>/<split>.txt`` lists (one file name or stem a line) -> {file stem: split}; None when there are none.

    Raises :class:`DataError` when one name is listed in two splits.
    """
    found: dict[str, str] = {}
    any_list = False
    for split in names:
        path = root / f"{split}.txt"
        if not path.is_file():
            continue
        any_list = True
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not a readable split list ({e}); expected one file name a line") from e
        for line in lines:
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            stem = Path(entry).stem
            if found.get(stem, split) != split:
                raise DataError(f"{path}: {entry} is also listed in {found[stem]}.txt; an item belongs to one split")
            found[stem] = split
    return found if any_list else None
