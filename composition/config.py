"""Thresholds of the composition record, in one dataclass mirrored by ``configs/composition.yaml``.

    cfg = CompositionConfig()                                   # the defaults (same values as the YAML file)
    cfg = load_config("configs/composition.yaml")               # or a file; unknown keys are an error

Every threshold is documented on its field; the record's README section explains the relation rules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from segcap.errors import ConfigError
from segcap.options import Group, NonNegativeFloat, Percent, PositiveInt, UnitShare, field_problems, load_yaml
from segcap.resources import shipped

DEFAULT_CONFIG_PATH = shipped("composition.yaml")  # configs/composition.yaml, shipped with the package


@dataclass(frozen=True)
class CompositionConfig(Group):
    """Composition thresholds, used by :func:`composition.extract.extract` (composition.extract's options).

    Attributes:
        min_region_pixels: a connected component (8-connectivity) counts as a region when it has at least this many
            pixels; a present class whose components are all smaller still counts as 1 region.
        dominant_min_percent: a class with at least this share of the image is dominant (the seed's "classes
            majorantes"); the largest class always is, whatever its share.
        max_dominant: at most this many dominant classes (the largest ones).
        ignore_in_relations: class names that take part in no relation (neither subject nor object).
        ring_pixels: width of the ring around a subject (square dilation) whose pixels say what it touches.
        surround_share: "surrounded by" needs at least this share of the ring to be the object class, and the
            subject's bounding box strictly inside the object's.
        on_distance: "on" when the two centroids are closer than this (fraction of the longer image side).
        next_to_distance: "next to" when the classes touch and their centroids are closer than this, but not "on".
    """

    min_region_pixels: PositiveInt = 4
    dominant_min_percent: Percent = 15.0
    max_dominant: PositiveInt = 3
    ignore_in_relations: tuple[str, ...] = ("unlabeled",)
    ring_pixels: PositiveInt = 2
    surround_share: UnitShare = 0.75
    on_distance: NonNegativeFloat = 0.08
    next_to_distance: NonNegativeFloat = 0.2

    def __post_init__(self):
        object.__setattr__(self, "ignore_in_relations", tuple(self.ignore_in_relations))
        problems = field_problems(self)
        near, next_to = self.on_distance, self.next_to_distance
        if isinstance(near, int | float) and isinstance(next_to, int | float) and near > next_to:
            problems.append(f"need on_distance <= next_to_distance, got {near} and {next_to}")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self.fields()}
        d["ignore_in_relations"] = list(d["ignore_in_relations"])
        return d


def load_config(path: str | Path | None = None, **overrides) -> CompositionConfig:
    """Read a composition config YAML (keys = :class:`CompositionConfig` fields); ``overrides`` win."""
    raw = {} if path is None else load_yaml(path)
    known = set(CompositionConfig.fields())
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(known))}")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return CompositionConfig(**raw)
