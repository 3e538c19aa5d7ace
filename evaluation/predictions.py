"""Read and validate a predictions file in COCO results format: ``[{"image_id": "<filename>", "caption": "..."}]``.

Every problem of a file is reported together, in one :class:`segcap.errors.DataError` (exit code 2) naming the file:
not a JSON list of objects, missing keys, empty captions, duplicate image ids, images outside the references' split,
images of the split without a prediction.
"""

from __future__ import annotations

import json
from pathlib import Path

from segcap.errors import DataError

FORMAT_HINT = 'expected COCO results JSON: a list of {"image_id": "<image filename>", "caption": "<text>"} objects'


def _few(names, n: int = 5) -> str:
    names = list(names)
    shown = ", ".join(str(x) for x in names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def read_predictions(path: str | Path, refs: dict[str, list[str]], split: str | None = None) -> dict[str, str]:
    """Read a COCO results file and check it against the references of one split.

    Args:
        path: the predictions JSON file.
        refs: image filename -> reference captions (the split being scored; one prediction needed for each).
        split: name of that split, used in messages only.

    Returns:
        image filename -> caption, in the order of ``refs``.

    Raises:
        DataError: listing every problem of the file (what, which file, how to fix).
    """
    path = Path(path)
    where = f"the {split} split of the references" if split else "the references"
    if not path.is_file():
        raise DataError(f"predictions file not found: {path}; pass the JSON written by `python -m llm.generate`")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e}); {FORMAT_HINT}") from e
    if not isinstance(data, list):
        hint = ""
        if isinstance(data, dict):
            hint = (
                '; it is a JSON object: if it maps image -> caption, write it as [{"image_id": image, "caption": '
                "caption}, ...]"
            )
            if isinstance(data.get("annotations"), list):
                hint = "; it looks like a COCO annotation file (references), not results"
        raise DataError(f"{path}: {FORMAT_HINT}; got a JSON {type(data).__name__}{hint}")

    problems: list[str] = []
    bad_entries: list[str] = []
    empty: list[str] = []
    seen: dict[str, int] = {}
    dupes: list[str] = []
    preds: dict[str, str] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            bad_entries.append(f"entry {i} is a {type(entry).__name__}, not an object")
            continue
        lacking = [k for k in ("image_id", "caption") if k not in entry]
        if lacking:
            bad_entries.append(f"entry {i} lacks {' and '.join(repr(k) for k in lacking)}")
            continue
        image_id, caption = entry["image_id"], entry["caption"]
        if not isinstance(image_id, (str, int)) or isinstance(image_id, bool):
            bad_entries.append(f"entry {i} has image_id {image_id!r}; expected the image filename as a string")
            continue
        image_id = str(image_id)
        if not isinstance(caption, str):
            bad_entries.append(f"entry {i} ({image_id}) has a {type(caption).__name__} caption; expected a string")
            continue
        if image_id in seen:
            dupes.append(image_id)
            continue
        seen[image_id] = i
        if not caption.strip():
            empty.append(image_id)
            continue
        preds[image_id] = caption.strip()

    if bad_entries:
        problems.append(f"{len(bad_entries)} malformed entr{'y' if len(bad_entries) == 1 else 'ies'} ({_few(bad_entries, 3)}); {FORMAT_HINT}")
    if dupes:
        problems.append(f"{len(set(dupes))} duplicate image_id(s) ({_few(sorted(set(dupes)))}); keep one caption per image")
    if empty:
        problems.append(f"{len(empty)} empty caption(s) ({_few(empty)}); every image needs a non-empty caption")
    unknown = [k for k in seen if k not in refs]
    if unknown:
        hint = ""
        stems = {Path(k).stem: k for k in refs}
        if any(u in stems for u in unknown):
            hint = f" (image_id must be the full filename, e.g. {stems[next(u for u in unknown if u in stems)]})"
        elif all(u.isdigit() for u in unknown):
            hint = " (image_id must be the image filename, not a numeric id)"
        problems.append(
            f"{len(unknown)} prediction(s) for images not in {where} ({_few(unknown)}){hint}; "
            "predict the same split you score (--split)"
        )
    missing = [k for k in refs if k not in seen]
    if missing:
        problems.append(
            f"{len(missing)} of the {len(refs)} images of {where} have no prediction ({_few(missing)}); "
            "generate captions for the whole split"
        )
    if problems:
        if len(problems) == 1:
            raise DataError(f"{path}: {problems[0]}")
        raise DataError(f"{path}: {len(problems)} problems:\n" + "\n".join(f"  - {p}" for p in problems))
    return {k: preds[k] for k in refs}
