"""Score caption predictions against a caption set with the COCO caption metrics (pycocoevalcap).

BLEU-1..4, METEOR, ROUGE-L and CIDEr after the PTB tokenizer, exactly as COCO caption evaluation computes them;
per-category scores; several systems side by side; the human-agreement ceiling; SPICE only when asked (and only
where its CoreNLP jars are present). Needs Java (METEOR and the tokenizer run in a JVM).

    # one system, test split, with the human ceiling
    python -m evaluation.score --predictions runs/demo/preds.json \\
        --references data/synthetic/rsicd/dataset_rsicd.json --split test --out runs/demo/scores --human

    # several systems side by side (one column each), parks only
    python -m evaluation.score --predictions llm.json nearest.json --names llm nearest \\
        --references /data/RSICD/dataset_rsicd.json --split test --out runs/cmp --category park

    # the ceiling alone, on the real RSICD val captions (COCO annotation format)
    python -m evaluation.score --references ../shared/anchors/rsicd-captions/captions_val.json --split val \\
        --human --out runs/rsicd-val-human

Writes ``scores.json`` (for machines), ``scores.md`` (tables: rows = metrics, one column per system) and
``scores.png`` (grouped bars) in ``--out``; refuses to replace existing scores without ``--overwrite``.
Predictions are COCO results JSON: ``[{"image_id": "<filename>", "caption": "..."}]``, or with the image's numeric
id as COCO-style tools write it (``"image_id": 8736``: COCO ``images[].id``, or ``imgid`` of Karpathy JSON where no two
images share one; see :mod:`evaluation.predictions`).

Library::

    from evaluation.score import score_captions, human_ceiling, read_predictions, write_report
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from aerialdata.captionset import CaptionDataset
from evaluation.metrics import (  # noqa: F401  (re-exported: the library interface of this part)
    METRIC_KEYS,
    CocoScorer,
    human_ceiling,
    require_java,
    score_captions,
)
from evaluation.predictions import read_predictions
from evaluation.report import HUMAN, check_report_writable, compute_scores, write_report  # noqa: F401
from segcap.cli import run
from segcap.errors import ConfigError
from segcap.options import checked

__all__ = ["score_captions", "human_ceiling", "read_predictions", "write_report", "compute_scores", "main"]


def _system_names(predictions: list[Path], names: list[str] | None, human: bool) -> list[str]:
    if names is not None:
        if len(names) != len(predictions):
            raise ConfigError(
                f"--names gives {len(names)} name(s) for {len(predictions)} predictions file(s); give one per file"
            )
    else:
        names = [p.stem for p in predictions]
        if len(set(names)) < len(names):  # same file name in different folders: add the folder
            names = [f"{p.parent.name}/{p.stem}" for p in predictions]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"system names must differ; {', '.join(dupes)} repeats; pass --names")
    if human and HUMAN in names:
        raise ConfigError(f"the name {HUMAN!r} is the human-ceiling column; pass another name with --names")
    return names


@checked
def main(
    references: Path,
    out: Path,
    predictions: list[Path] | None = None,
    split: Literal["test", "val", "train", "restval"] = "test",
    names: list[str] | None = None,
    human: bool = False,
    category: str | None = None,
    per_category: bool = True,
    spice: bool = False,
    tokenize: bool = True,
    overwrite: bool = False,
) -> dict:
    """Score caption predictions with BLEU-1..4, METEOR, ROUGE-L and CIDEr (pycocoevalcap), per system and category.

    Args:
        references: the caption set: Karpathy JSON (dataset_rsicd.json, or its folder) or COCO caption annotations.
        out: folder for scores.json, scores.md and scores.png.
        predictions: COCO results JSON file(s), [{"image_id": filename or numeric id, "caption": text}]; one column
            per file. A numeric id is the references' COCO images[].id (or Karpathy imgid, when unambiguous).
        split: split of the references to score (a COCO annotation file counts as this split).
        names: column name per predictions file (default: the file names without .json).
        human: add the human-agreement ceiling (each reference against the others of its image, leave-one-out).
        category: score only the images of this category (e.g. park); predictions for other images are ignored.
        per_category: also score each category on its own (categories from txtclasses_rsicd/ or filename prefix).
        spice: try SPICE as well; reported as unavailable, with the reason, when it cannot run (offline it cannot).
        tokenize: PTB-tokenize captions first, as COCO evaluation does (--no-tokenize: score the text as given).
        overwrite: replace scores already in --out.
    """

    predictions = list(predictions or [])
    # 1. options and output first: fail before any work
    if not predictions and not human:
        raise ConfigError("nothing to score: pass --predictions FILE [FILE ...], --human, or both")
    system_names = _system_names(predictions, names, human)
    check_report_writable(out, overwrite)
    require_java()  # METEOR always runs, the tokenizer too unless --no-tokenize

    # 2. references, categories, predictions (all validated before scoring)
    dataset = CaptionDataset(references, split=split)
    refs = dataset.references()
    categories = dataset.categories()
    systems = {n: read_predictions(p, refs, split, references=references)
               for n, p in zip(system_names, predictions, strict=True)}
    if category is not None:
        present = sorted(set(categories.values()))
        if category.lower() not in present:
            raise ConfigError(f"category {category!r} has no image in split {split!r}; categories: {', '.join(present)}")
        keep = [k for k in refs if categories[k] == category.lower()]
        refs = {k: refs[k] for k in keep}
        systems = {n: {k: p[k] for k in keep} for n, p in systems.items()}

    # 3. score and write
    metadata = {
        "references": str(references),
        "split": split,
        "category": category.lower() if category else None,
        "predictions": {n: str(p) for n, p in zip(system_names, predictions, strict=True)},
    }
    print(
        f"scoring {len(systems)} system(s){' + human ceiling' if human else ''} on {len(refs)} images "
        f"(METEOR's JVM loads its paraphrase table first: ~10 s)",
        file=sys.stderr,
    )
    scores = write_report(
        out, systems, refs, categories if category is None else None, human=human, overwrite=overwrite,
        metadata=metadata, tokenize=tokenize, spice=spice, per_category=per_category, progress=True,
    )
    if spice and scores["metadata"]["spice"] != "ok":
        print(f"SPICE {scores['metadata']['spice']}", file=sys.stderr)
    print((Path(out) / "scores.md").read_text(encoding="utf-8").split("## Per category")[0].rstrip())
    print(f"\nwrote {out}/scores.json, scores.md, scores.png", file=sys.stderr)
    return scores


if __name__ == "__main__":
    run(main)
