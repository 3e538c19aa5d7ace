"""The drone dataset's 24 source classes and the class tables that group them (configs/classes/*.yaml, shipped with
the package: :mod:`segcap.resources`).

A class table is data, never code: each group names its id, name, overlay colour and source classes.
:class:`ClassTable` turns it into a lookup table from source id to group id::

    table = load_class_table("seed10")          # or a path to a YAML file
    groups = table.group(source_mask)           # (H, W) uint8 source ids -> (H, W) uint8 group ids
    table.names[4], table.colors[4]              # 'vegetation', (60, 160, 40)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import yaml

from segcap.errors import ConfigError, DataError
from segcap.resources import config_path, looked_for, shipped

CLASS_TABLE_DIR = shipped("classes")  # the shipped tables, found by name from any working folder

# The aerial semantic drone dataset: id -> (name, RGB) as in its class_dict_seg.csv.
DRONE_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("unlabeled", (0, 0, 0)),
    ("paved-area", (128, 64, 128)),
    ("dirt", (130, 76, 0)),
    ("grass", (0, 102, 0)),
    ("gravel", (112, 103, 87)),
    ("water", (28, 42, 168)),
    ("rocks", (48, 41, 30)),
    ("pool", (0, 50, 89)),
    ("vegetation", (107, 142, 35)),
    ("roof", (70, 70, 70)),
    ("wall", (102, 102, 156)),
    ("window", (254, 228, 12)),
    ("door", (254, 148, 12)),
    ("fence", (190, 153, 153)),
    ("fence-pole", (153, 153, 153)),
    ("person", (255, 22, 96)),
    ("dog", (102, 51, 0)),
    ("car", (9, 143, 150)),
    ("bicycle", (119, 11, 32)),
    ("tree", (51, 51, 0)),
    ("bald-tree", (190, 250, 190)),
    ("ar-marker", (112, 150, 146)),
    ("obstacle", (2, 135, 115)),
    ("conflicting", (255, 0, 0)),
)
SOURCE_NAMES: tuple[str, ...] = tuple(name for name, _ in DRONE_CLASSES)
SOURCE_ID: dict[str, int] = {name: i for i, name in enumerate(SOURCE_NAMES)}
NUM_SOURCE_CLASSES = len(DRONE_CLASSES)  # 24

INVALID = 255  # lookup value for a source id that no group claims


@dataclass(frozen=True)
class Group:
    id: int
    name: str
    color: tuple[int, int, int]
    sources: tuple[str, ...]


@dataclass(frozen=True)
class ClassTable:
    """A grouping of the 24 source classes into ``len(groups)`` groups with ids 0..N-1."""

    name: str
    groups: tuple[Group, ...]
    path: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.groups)

    @property
    def names(self) -> list[str]:
        return [g.name for g in self.groups]

    @property
    def colors(self) -> np.ndarray:
        """(N, 3) uint8 RGB overlay colours, row i for group id i."""
        return np.array([g.color for g in self.groups], dtype=np.uint8)

    @cached_property
    def lut(self) -> np.ndarray:
        """(256,) uint8: source id -> group id; :data:`INVALID` for ids no group claims."""
        lut = np.full(256, INVALID, dtype=np.uint8)
        for g in self.groups:
            for s in g.sources:
                lut[SOURCE_ID[s]] = g.id
        return lut

    def group(self, source_mask: np.ndarray, where: str | Path = "mask") -> np.ndarray:
        """Map a mask of source ids (0..23) to group ids; a clear error names ``where`` for ids out of range."""
        source_mask = np.asarray(source_mask)
        if source_mask.dtype != np.uint8:
            if source_mask.size and (source_mask.min() < 0 or source_mask.max() > 255):
                raise DataError(f"{where}: mask values must be class ids 0..{NUM_SOURCE_CLASSES - 1}")
            source_mask = source_mask.astype(np.uint8)
        out = self.lut[source_mask]
        if (out == INVALID).any():
            bad = sorted(int(v) for v in np.unique(source_mask[out == INVALID]))
            raise DataError(
                f"{where}: mask holds ids {bad[:10]} outside the drone dataset's 0..{NUM_SOURCE_CLASSES - 1}; "
                "label masks must be single-channel PNGs of source class ids (label_images_semantic)"
            )
        return out

    def group_of(self, source_name: str) -> int:
        return int(self.lut[SOURCE_ID[source_name]])

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "groups": [
                {"id": g.id, "name": g.name, "color": list(g.color), "sources": list(g.sources)} for g in self.groups
            ],
        }


def load_class_table(name_or_path: str | Path = "seed10") -> ClassTable:
    """Load a class table by name (``seed10``, ``aerial10``: the shipped configs/classes/<name>.yaml) or from a YAML
    path (an existing file as given; a missing ``configs/classes/...`` path is the shipped file)."""
    p = config_path(name_or_path)
    if not p.suffix and not p.exists():
        p = CLASS_TABLE_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        known = ", ".join(sorted(f.stem for f in CLASS_TABLE_DIR.glob("*.yaml") if f.stem != "caption_words"))
        where = looked_for(name_or_path) if Path(name_or_path).suffix else f"looked for {p}"
        raise ConfigError(f"class table {name_or_path!s} not found; {where}; use one of: {known}, "
                          "or a path to a YAML file")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({e})") from e
    return class_table_from_dict(raw, where=p)


def class_table_from_dict(raw: dict, where: str | Path = "class table") -> ClassTable:
    """Build and validate a :class:`ClassTable`; every problem is reported together."""
    problems: list[str] = []
    if not isinstance(raw, dict) or not isinstance(raw.get("groups"), list) or not raw["groups"]:
        raise ConfigError(f"{where}: expected a mapping with a non-empty 'groups' list")
    groups: list[Group] = []
    claimed: dict[str, int] = {}
    for i, g in enumerate(raw["groups"]):
        missing = [k for k in ("id", "name", "color", "sources") if not isinstance(g, dict) or k not in g]
        if missing:
            problems.append(f"group {i}: needs id, name, color and sources (missing {', '.join(missing)})")
            continue
        gid, name, color, sources = g["id"], str(g["name"]), g["color"], g["sources"]
        if not isinstance(gid, int) or isinstance(gid, bool):
            problems.append(f"group {name!r}: id must be an integer (its position, {i}), got {gid!r}")
            gid = i
        if not isinstance(sources, list):
            problems.append(f"group {name!r}: sources must be a list of source class names, got {sources!r}")
            sources = []
        if gid != i:
            problems.append(f"group {name!r}: id {gid} but position {i}; ids must be 0..N-1 in order")
        if not (isinstance(color, list) and len(color) == 3
                and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in color)):
            problems.append(f"group {name!r}: color must be [r, g, b] with values 0..255")
            color = [0, 0, 0]
        for s in sources:
            if s not in SOURCE_ID:
                problems.append(f"group {name!r}: unknown source class {s!r}; valid: {', '.join(SOURCE_NAMES)}")
            elif s in claimed:
                problems.append(f"source class {s!r} is in group {claimed[s]} and group {gid}")
            else:
                claimed[s] = gid
        groups.append(Group(gid, name, tuple(int(c) for c in color), tuple(sources)))
    missing = [s for s in SOURCE_NAMES if s not in claimed]
    if missing:
        problems.append(f"source classes in no group: {', '.join(missing)}")
    if problems:
        raise ConfigError([f"{where}: {p}" for p in problems])
    return ClassTable(name=str(raw.get("name", Path(str(where)).stem)), groups=tuple(groups),
                      path=Path(where) if isinstance(where, Path) else None)
