"""Edits of a composition record that keep it a valid ``segcap.composition`` record, so a person can ask the caption
LM "what if": remove a class, change its percent, position or region count, add or drop a relation, set or drop a
scene.

Each function returns a new record (the input is left as it is) and raises :class:`segcap.errors.DataError` with a
message for the page when the edit cannot be made::

    from app.edits import remove_class, set_percent, add_relation
    edited = remove_class(record, "water")                  # the others rescaled to 100%, its relations dropped
    edited = set_percent(edited, "building", 30.0)          # the others share the remaining 70% as before
    edited = add_relation(edited, "building", "left of", "vegetation")

Percents stay in tenths that sum to exactly 100.0 with no present class at 0.0, and classes stay sorted by percent
(the extractor's rules, README "Composition rounding"). A new position moves the class's centre and centroid to the
middle of that cell of the 3x3 grid (the nearest-neighbour baseline reads the centroid, the LM the position word);
its radius and bounding box stay as measured.

Scenes (``segcap.composition/2``): :func:`set_scene` gives a scene a probability (adding it when the record does not
list it, the record becoming ``/2``); the other scenes keep theirs unless together they would pass the rest
(1 - probability), when they are scaled down to share it; the list stays most probable first and at most 5 long (the
least probable goes). :func:`drop_scene` removes one; removing the last removes the field.
"""

from __future__ import annotations

import copy
import math

from composition.extract import POSITIONS, with_scenes
from composition.relations import RELATIONS
from composition.schema import MAX_SCENES, SCHEMA_ID, problems
from segcap.errors import DataError

POSITION_NAMES = tuple(p for row in POSITIONS for p in row)


def _class(record: dict, name: str) -> dict:
    for c in record["classes"]:
        if c["name"] == name:
            return c
    present = ", ".join(c["name"] for c in record["classes"])
    raise DataError(f"no class {name!r} in this composition (it has {present})")


def _tenths(weights: list[float], total: int) -> list[int]:
    """``total`` tenths shared in proportion to ``weights`` (largest remainder), each at least 1."""
    n = len(weights)
    if n == 0:
        return []
    s = sum(weights)
    share = [w / s * total for w in weights] if s > 0 else [total / n] * n
    out = [max(1, math.floor(x)) for x in share]
    order = sorted(range(n), key=lambda i: share[i] - math.floor(share[i]), reverse=True)
    k = 0
    while sum(out) < total:
        out[order[k % n]] += 1
        k += 1
    k = 0
    by_size = sorted(range(n), key=lambda i: out[i], reverse=True)
    while sum(out) > total:  # the minimum of 1 tenth overshot: take it back from the largest
        i = by_size[k % n]
        if out[i] > 1:
            out[i] -= 1
        k += 1
    return out


def _finish(record: dict, sort: bool = True) -> dict:
    if sort:  # after a change of percents; a scene edit leaves the classes (and ties among them) as they were
        record["classes"].sort(key=lambda c: (-c["percent"], c["id"]))
    found = problems(record)
    if found:  # a bug in an edit, not the user's doing: say it rather than hand the LM a broken record
        raise DataError(f"the edited composition is not valid: {found[0]}")
    return record


def remove_class(record: dict, name: str) -> dict:
    """``record`` without class ``name`` and its relations; the other classes rescaled to sum to 100%."""
    out = copy.deepcopy(record)
    _class(out, name)
    if len(out["classes"]) == 1:
        raise DataError(f"{name!r} is the only class; a composition needs at least one")
    out["classes"] = [c for c in out["classes"] if c["name"] != name]
    for c, t in zip(out["classes"], _tenths([c["percent"] for c in out["classes"]], 1000), strict=True):
        c["percent"] = t / 10
    out["relations"] = [r for r in out["relations"] if name not in (r["subject"], r["object"])]
    return _finish(out)


def set_percent(record: dict, name: str, percent: float) -> dict:
    """Class ``name`` at ``percent`` (0.1..100 in tenths); the others share the rest in their former proportions."""
    out = copy.deepcopy(record)
    target = _class(out, name)
    others = [c for c in out["classes"] if c is not target]
    tenths = round(float(percent) * 10)
    if not others and tenths != 1000:
        raise DataError(f"{name} is the only class, so it covers 100%; add classes in the JSON first")
    if not 1 <= tenths <= 1000 - len(others):
        most = (1000 - len(others)) / 10
        raise DataError(f"{name}: percent must be between 0.1 and {most:g} (each of the {len(others)} other "
                        f"classes keeps at least 0.1%), got {percent:g}")
    target["percent"] = tenths / 10
    for c, t in zip(others, _tenths([c["percent"] for c in others], 1000 - tenths), strict=True):
        c["percent"] = t / 10
    return _finish(out)


def set_position(record: dict, name: str, position: str) -> dict:
    """Class ``name`` in the 3x3 cell ``position``: its centre and centroid move to the middle of that cell."""
    if position not in POSITION_NAMES:
        raise DataError(f"unknown position {position!r}; use one of {', '.join(POSITION_NAMES)}")
    out = copy.deepcopy(record)
    c = _class(out, name)
    row = next(i for i, r in enumerate(POSITIONS) if position in r)
    col = POSITIONS[row].index(position)
    middle = [round((col + 0.5) / 3, 4), round((row + 0.5) / 3, 4)]
    c["position"], c["center"], c["centroid"] = position, middle, list(middle)
    return _finish(out)


def set_regions(record: dict, name: str, regions: int) -> dict:
    """Class ``name`` in ``regions`` connected regions (at least 1)."""
    if int(regions) < 1:
        raise DataError(f"{name}: regions must be at least 1, got {regions}")
    out = copy.deepcopy(record)
    _class(out, name)["regions"] = int(regions)
    return _finish(out)


def add_relation(record: dict, subject: str, relation: str, obj: str) -> dict:
    """``record`` with the relation ``subject relation obj`` added at the end (both must be classes of it)."""
    if relation not in RELATIONS:
        raise DataError(f"unknown relation {relation!r}; use one of {', '.join(RELATIONS)}")
    if subject == obj:
        raise DataError(f"a relation needs two different classes, got {subject!r} twice")
    out = copy.deepcopy(record)
    _class(out, subject)
    _class(out, obj)
    new = {"subject": subject, "relation": relation, "object": obj}
    if new in out["relations"]:
        raise DataError(f"the composition already says {subject} {relation} {obj}")
    out["relations"].append(new)
    return _finish(out)


def drop_relation(record: dict, index: int) -> dict:
    """``record`` without its relation number ``index`` (0-based, in record order)."""
    if not 0 <= index < len(record["relations"]):
        raise DataError(f"no relation number {index + 1}; this composition has {len(record['relations'])}")
    out = copy.deepcopy(record)
    del out["relations"][index]
    return _finish(out)


def relation_text(r: dict) -> str:
    return f"{r['subject']} {r['relation']} {r['object']}"


def set_scene(record: dict, name: str, probability: float) -> dict:
    """Scene ``name`` at ``probability`` (0..1); the other scenes scaled down only as far as the total needs."""
    name = str(name).strip()
    if not name:
        raise DataError("a scene needs a name, e.g. airplane")
    p = float(probability)
    if not 0 <= p <= 1:
        raise DataError(f"{name}: a scene's probability is between 0 and 1, got {probability:g}")
    others = [dict(s) for s in record.get("scenes") or [] if s["name"] != name]
    rest = sum(s["probability"] for s in others)
    if rest > 1 - p:
        for s in others:
            s["probability"] = math.floor(s["probability"] * (1 - p) / rest * 1000) / 1000
    scenes = sorted([{"name": name, "probability": round(p, 3)}, *others], key=lambda s: -s["probability"])
    if name not in [s["name"] for s in scenes[:MAX_SCENES]]:
        raise DataError(f"{name}: a composition lists at most {MAX_SCENES} scenes and {name} would be the least "
                        "probable; drop a scene first or give it a higher probability")
    return _finish(with_scenes(copy.deepcopy(record), scenes[:MAX_SCENES], "the edited scenes"), sort=False)


def drop_scene(record: dict, name: str) -> dict:
    """``record`` without scene ``name`` (without ``"scenes"`` when it was the only one)."""
    scenes = record.get("scenes") or []
    if name not in [s["name"] for s in scenes]:
        listed = ", ".join(s["name"] for s in scenes) or "none"
        raise DataError(f"no scene {name!r} in this composition (its scenes: {listed})")
    out = copy.deepcopy(record)
    out["scenes"] = [s for s in out["scenes"] if s["name"] != name]
    if not out["scenes"]:
        del out["scenes"]
    out["schema"] = SCHEMA_ID
    return _finish(out, sort=False)


def scenes_text(record: dict) -> str:
    """``'airplane 93.1%, runway 4.1%'`` ('' without scenes)."""
    return ", ".join(f"{s['name']} {100 * s['probability']:.1f}%" for s in record.get("scenes") or [])
