"""The composition record's JSON Schema (``composition/schema.json``, draft 2020-12) and JSON Lines I/O.

    records = read_jsonl("runs/compositions.jsonl")    # validated; DataError names the file and line
    write_jsonl("runs/copy.jsonl", records)            # validated, atomic

Beyond the schema, :func:`validate` checks what JSON Schema cannot say: classes sorted by percent, percents summing
to 100, unique ids, relations naming classes of the record.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from jsonschema import Draft202012Validator

from segcap import atomic
from segcap.errors import DataError

SCHEMA_ID = "segcap.composition/1"
SCHEMA_PATH = Path(__file__).resolve().parent / "schema.json"


@lru_cache(maxsize=1)
def schema() -> dict:
    """The JSON Schema of one record."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


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
    return out


def validate(record, where: str = "record") -> dict:
    """Return ``record`` if it is a valid ``segcap.composition/1`` record, else raise :class:`DataError`."""
    found = problems(record)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DataError(f"{where}: not a valid {SCHEMA_ID} record: {found[0]}{more}; "
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
