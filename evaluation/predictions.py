"""Read and validate a predictions file in COCO results format: ``[{"image_id": ..., "caption": "..."}]``.

``image_id`` is the image's filename (``"pond_3.jpg"``, what ``llm.generate`` writes) or, as COCO-style tools write
it, the image's numeric id in the references (a JSON number, mapped to the filename by :func:`image_ids`):

- COCO caption annotations (``images`` + ``annotations``): the id is ``images[].id``.
- Karpathy-split JSON (dataset_rsicd.json): the id is ``images[].imgid``, but only when no two images of the file
  share one; an image without ``imgid`` is numbered by its position in the file, as the reader does. Where
  imgids repeat, a numeric id is refused (it could name either image) and the message says to write filenames.

A string is always a filename (``"8736"`` is not the id 8736: COCO tools compare ids by type as well). Every problem
of a file is reported together, in one :class:`segcap.errors.DataError` (exit code 2) naming the file: not a JSON list
of objects, missing keys, empty captions, duplicate images, numeric ids that match no image, images outside the
references' split, images of the split without a prediction.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from aerialdata.captionset import CaptionDataset
from segcap.errors import DataError

FORMAT_HINT = (
    'expected COCO results JSON: a list of {"image_id": <image filename or numeric id>, "caption": "<text>"} objects'
)


@dataclass(frozen=True)
class ImageIds:
    """Numeric image id -> filename for the whole references file (every split).

    Attributes:
        by_id: id -> filename; empty when the ids are ambiguous.
        source: what the ids are and which file they come from, for messages.
        ambiguous: why numeric ids cannot be used (an id that names several images), or None.
    """

    by_id: dict[int, str] = field(default_factory=dict)
    source: str = "the references' image ids"
    ambiguous: str | None = None


_NO_REFERENCES = ImageIds(source="no references file", ambiguous="no references file")


def image_ids(references: str | Path | CaptionDataset) -> ImageIds:
    """The numeric ids that name the images of a references file: COCO ``images[].id`` or Karpathy ``imgid``.

    Args:
        references: the references file or folder (read with every split), or a :class:`CaptionDataset` read
            without a split (a dataset of one split only checks that split's ids for repeats).
    """
    dataset = references if isinstance(references, CaptionDataset) else CaptionDataset(references)
    source = f"the image ids of {dataset.json_path} (COCO images[].id, or imgid in Karpathy JSON)"
    counts = Counter(it.imgid for it in dataset.items)
    repeated = sorted(i for i, n in counts.items() if n > 1)
    if repeated:
        names = [it.filename for it in dataset.items if it.imgid == repeated[0]]
        return ImageIds({}, source, f"{len(repeated)} id(s) name several images (id {repeated[0]}: {_few(names, 3)})")
    return ImageIds({it.imgid: it.filename for it in dataset.items}, source)


def _few(names, n: int = 5) -> str:
    names = list(names)
    shown = ", ".join(str(x) for x in names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def read_predictions(
    path: str | Path,
    refs: dict[str, list[str]],
    split: str | None = None,
    references: str | Path | CaptionDataset | ImageIds | None = None,
) -> dict[str, str]:
    """Read a COCO results file and check it against the references of one split.

    Args:
        path: the predictions JSON file.
        refs: image filename -> reference captions (the split being scored; one prediction needed for each).
        split: name of that split, used in messages only.
        references: where numeric ``image_id``s are looked up (see :func:`image_ids`): the references file (read
            again, every split, only when the predictions hold a numeric id), or its :class:`ImageIds`. None:
            numeric ids are refused.

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
    label: dict[str, str] = {}  # filename -> how messages name it ("pond_3.jpg (image_id 4)" for a numeric id)
    dupes: list[str] = []
    preds: dict[str, str] = {}
    ids: ImageIds | None = references if isinstance(references, ImageIds) else None
    unmapped: list[int] = []  # numeric ids that name no image
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
            bad_entries.append(
                f"entry {i} has image_id {image_id!r}; expected the image filename (a string) or its numeric id "
                "(an integer)"
            )
            continue
        if isinstance(image_id, int):
            if ids is None:
                ids = image_ids(references) if references is not None else _NO_REFERENCES
            if image_id not in ids.by_id:
                unmapped.append(image_id)
                continue
            name, shown = ids.by_id[image_id], f"{ids.by_id[image_id]} (image_id {image_id})"
        else:
            name = shown = image_id
        if not isinstance(caption, str):
            bad_entries.append(f"entry {i} ({shown}) has a {type(caption).__name__} caption; expected a string")
            continue
        if name in seen:
            dupes.append(shown)
            continue
        seen[name], label[name] = i, shown
        if not caption.strip():
            empty.append(shown)
            continue
        preds[name] = caption.strip()

    if bad_entries:
        problems.append(f"{len(bad_entries)} malformed entr{'y' if len(bad_entries) == 1 else 'ies'} ({_few(bad_entries, 3)}); {FORMAT_HINT}")
    if unmapped and ids is not None:
        if ids is _NO_REFERENCES:
            problems.append(
                f"{len(unmapped)} numeric image_id(s) ({_few(unmapped)}) and no references file to look them up in; "
                "pass references= to read_predictions, or write the image filenames as image_id"
            )
        elif ids.ambiguous:
            problems.append(
                f"{len(unmapped)} numeric image_id(s) ({_few(unmapped)}) cannot be mapped to images: "
                f"{ids.ambiguous} in {ids.source}; write the image filenames as image_id"
            )
        else:
            problems.append(
                f"{len(unmapped)} numeric image_id(s) match no image ({_few(unmapped)}); they are looked up in "
                f"{ids.source}; predict images of these references, or write the image filenames as image_id"
            )
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
            hint = f' (a quoted number is read as a filename; write numeric image ids as JSON numbers: {unknown[0]}, not "{unknown[0]}")'
        problems.append(
            f"{len(unknown)} prediction(s) for images not in {where} ({_few(label[u] for u in unknown)}){hint}; "
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
