"""The composition record's JSON Schema (``composition/schema.json``, draft 2020-12) and JSON Lines I/O.

    records = read_jsonl("runs/compositions.jsonl")    # validated; DataError names the file and line
    write_jsonl("runs/copy.jsonl", records)            # validated, atomic

Beyond the schema, :func:`validate` checks what JSON Schema cannot say: classes sorted by percent, percents summing
to 100, unique ids, relations naming classes of the record, scenes sorted by probability with distinct names.

Versions. ``segcap.composition/2`` (issue 23) adds one optional field, ``"scenes"``: the top scene classes of a scene
head on the segmenter's encoder, most probable first, 1 to 5 entries of ``{"name": "airplane", "probability": 0.931}``
(probabilities in [0, 1], descending, names distinct, summing to at most 1 give or take rounding). It is absent when no
scene head was used. Every new record says ``/2`` (:data:`SCHEMA_ID`); ``/1`` records (files written before) still
read and validate, and a ``/1`` record never has scenes. Nothing else changed: a ``/2`` record without scenes holds
exactly what its ``/1`` twin held, and renders the same prompt text (:mod:`composition.text`).

The scene head's per-image output, written beside the masks by ``segmentation.predict`` (``<masks>/scenes.json``), is
read by :func:`read_scenes`::

    {"schema": "segcap.scenes/1", "classes": ["airplane", ...],
     "images": {"<mask stem>": [{"name": "airplane", "probability": 0.931}, ...]}}
"""

from __future__ import annotations

import json
import numbers
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from jsonschema import Draft202012Validator

from segcap import atomic
from segcap.errors import DataError

SCHEMA_ID = "segcap.composition/2"  # what every new record says
SCHEMA_IDS = ("segcap.composition/1", SCHEMA_ID)  # what reads and validates (/1: no scenes)
SCENES_SCHEMA_ID = "segcap.scenes/1"  # the scene head's scenes.json beside the masks
MAX_SCENES = 5
SCENE_SUM_SLACK = 0.01  # scenes' probabilities may sum past 1 by this much (each rounded to 3 decimals)
SCHEMA_FILE = "schema.json"  # package data of composition, read through importlib.resources


@lru_cache(maxsize=1)
def schema() -> dict:
    """The JSON Schema of one record."""
    return json.loads(files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator():

    Draft202012Validator.check_schema(schema())
    return Draft202012Validator(schema())


def problems(record) -> list[str]:
    """Every problem with ``record`` (empty when valid)."""
    errs = sorted(_validator().iter_errors(record), key=lambda e: list(e.absolute_path))
    out = [f"{'/'.join(str(p) for p in e.absolute_path) or '(record)'}: {e.message}" for e in errs]
    if out:
        return out
    classes = record["classes"]
    pct = [c["percent"] for c in classes]
    if any(a < b for a, b in zip(pct, pct[1:], strict=False)):
        out.append(f"classes: not sorted by percent descending ({pct})")
    if abs(sum(pct) - 100.0) > 0.05:
        out.append(f"classes: percents sum to {sum(pct):.2f}, not 100")
    ids = [c["id"] for c in classes]
    if len(set(ids)) != len(ids):
        out.append(f"classes: repeated ids {ids}")
    names = {c["name"] for c in classes}
    for i, r in enumerate(record["relations"]):
        for key in ("subject", "object"):
            if r[key] not in names:
                out.append(f"relations/{i}/{key}: {r[key]!r} is not a class of this record")
    if "scenes" in record:
        if record["schema"] != SCHEMA_ID:
            out.append(f"scenes: a {record['schema']} record has no scenes; write it as {SCHEMA_ID}")
        out += [f"scenes: {p}" for p in scene_problems(record["scenes"])]
    return out


def scene_problems(scenes) -> list[str]:
    """Every problem with a list of scenes (empty when valid): 1 to :data:`MAX_SCENES` entries
    ``{"name": non-empty string, "probability": number in [0, 1]}``, most probable first, distinct names, summing to
    at most 1 (+ :data:`SCENE_SUM_SLACK`)."""
    if not isinstance(scenes, list) or not 1 <= len(scenes) <= MAX_SCENES:
        got = f"{len(scenes)} entries" if isinstance(scenes, list) else type(scenes).__name__
        return [f"expected a list of 1 to {MAX_SCENES} {{name, probability}} entries, got {got}"]
    out = []
    for i, s in enumerate(scenes):
        if not isinstance(s, dict) or set(s) != {"name", "probability"}:
            out.append(f"{i}: expected {{\"name\": ..., \"probability\": ...}}, got {json.dumps(s)[:80]}")
        elif not isinstance(s["name"], str) or not s["name"].strip():
            out.append(f"{i}/name: expected a non-empty string, got {s['name']!r}")
        elif (isinstance(s["probability"], bool) or not isinstance(s["probability"], numbers.Real)
              or not 0 <= s["probability"] <= 1):
            out.append(f"{i}/probability: expected a number in [0, 1], got {s['probability']!r}")
    if out:
        return out
    p = [s["probability"] for s in scenes]
    if any(a < b for a, b in zip(p, p[1:], strict=False)):
        out.append(f"not sorted by probability descending ({p})")
    names = [s["name"] for s in scenes]
    if len(set(names)) != len(names):
        out.append(f"repeated names {names}")
    if sum(p) > 1 + SCENE_SUM_SLACK:
        out.append(f"probabilities sum to {sum(p):.3f}, more than 1")
    return out


def validate(record, where: str = "record") -> dict:
    """Return ``record`` if it is a valid ``segcap.composition/1`` or ``/2`` record, else raise :class:`DataError`."""
    found = problems(record)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        says = record.get("schema") if isinstance(record, dict) and record.get("schema") in SCHEMA_IDS else SCHEMA_ID
        raise DataError(f"{where}: not a valid {says} record: {found[0]}{more}; "
                        "rewrite it with python -m composition.extract")
    return record


def read_jsonl(path: str | Path) -> list[dict]:
    """Read and validate a compositions file (one record a line; blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"compositions file not found: {path}; write one with python -m composition.extract")
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not JSON ({e.msg} at column {e.colno})") from e
            records.append(validate(record, f"{path}:{lineno}"))
    return records


def write_jsonl(path: str | Path, records) -> Path:
    """Validate ``records`` and write them one a line, atomically."""
    records = list(records)
    for i, r in enumerate(records):
        validate(r, f"record {i} ({r.get('image', '?') if isinstance(r, dict) else '?'})")
    return atomic.write_jsonl(path, records)


def read_scenes(path: str | Path) -> dict[str, list[dict]]:
    """{mask stem: scenes} from a scene head's ``scenes.json`` (:data:`SCENES_SCHEMA_ID`), or one :class:`DataError`
    naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"scenes file not found: {path}; segmentation.predict writes it beside the masks when the "
                        "segmenter has a scene head (or pass --scenes null to leave scenes out)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not JSON ({e}); expected a {SCENES_SCHEMA_ID} file from segmentation.predict") from e
    found = []
    if not isinstance(doc, dict) or doc.get("schema") != SCENES_SCHEMA_ID:
        said = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
        found.append(f'"schema" is {said!r}, not {SCENES_SCHEMA_ID!r}')
    elif not isinstance(doc.get("images"), dict):
        found.append('"images" must map each mask stem to its list of {name, probability}')
    else:
        known = doc.get("classes")
        if known is not None and not (isinstance(known, list) and all(isinstance(c, str) for c in known)):
            found.append('"classes" must be a list of scene names')
            known = None
        for key, scenes in doc["images"].items():
            found += [f"images/{key}/{p}" for p in scene_problems(scenes)]
            if known is not None and isinstance(scenes, list):
                found += [f"images/{key}: scene {s['name']!r} is not one of its \"classes\""
                          for s in scenes if isinstance(s, dict) and s.get("name") not in known]
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DataError(f"{path}: not a {SCENES_SCHEMA_ID} file: {found[0]}{more}; expected "
                        '{"schema": "segcap.scenes/1", "classes": [...], "images": {"<mask stem>": '
                        '[{"name": "airplane", "probability": 0.931}, ...]}} as segmentation.predict writes it')
    return doc["images"]
