"""Benchmark: COCO caption scoring of a whole RSICD split (target: 1,093 images x 5 references in under 10 s).

Scores the first reference of every image against its other references, with everything a real run does:
PTB tokenizer (one Java run), METEOR (its JVM start included), BLEU-1..4, ROUGE-L, CIDEr. Prints one JSON object.

    python -m bench.evaluation_speed
    python -m bench.evaluation_speed --captions /data/RSICD/dataset_rsicd.json --split test
    python -m bench.evaluation_speed --human      # also time the 5-round human-agreement ceiling
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Literal

from aerialdata.captionset import CaptionDataset
from evaluation.metrics import CocoScorer, average_rounds, human_rounds, java_version
from segcap.cli import run

DEFAULT_CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "anchors" / "rsicd-captions" / "captions_val.json"


def main(captions: Path = DEFAULT_CAPTIONS, split: Literal["val", "test", "train", "restval"] = "val",
         human: bool = False) -> dict:
    """Time pycocoevalcap scoring of one caption split.

    Args:
        captions: caption set (Karpathy JSON or COCO caption annotations); default: the real RSICD val captions.
        split: split to score.
        human: also time the human-agreement ceiling (leave-one-out rounds) with the same METEOR JVM.
    """

    refs_all = CaptionDataset(captions, split=split).references()
    preds = {k: v[0] for k, v in refs_all.items() if len(v) >= 2}
    refs = {k: refs_all[k][1:] for k in preds}

    # everything a real run does, JVM starts included: timed from opening the scorer to the scores
    t0 = time.perf_counter()
    with CocoScorer() as scorer:
        scores = scorer.score(preds, refs)
        seconds = time.perf_counter() - t0
        stages = {k: round(v, 3) for k, v in scorer.timings.items()}
        stages["meteor_start"] = scorer.meteor_start_seconds
        human_scores, t_human = None, None
        if human:  # reuses the warm JVM
            t1 = time.perf_counter()
            rounds = human_rounds(refs_all)
            human_scores = average_rounds(scorer.score_many(rounds))
            t_human = time.perf_counter() - t1

    import torch

    out = {
        "bench": "evaluation_speed",
        "captions": str(captions),
        "split": split,
        "images": len(preds),
        "references_per_image": round(sum(len(v) for v in refs_all.values()) / len(refs_all), 2),
        "scored_as": "reference 1 of each image against its other references",
        "seconds": round(seconds, 3),
        "target_seconds": 10,
        "per_stage_seconds": stages,
        "note": "stages overlap: METEOR runs in its own JVM, started first, while the PTB tokenizer, BLEU, ROUGE-L and "
        "CIDEr run; meteor_start = JVM start + paraphrase table load; METEOR = wait for the JVM + scoring",
        "scores": {k: round(v, 6) for k, v in scores.items()},
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "torch_threads": torch.get_num_threads(),
            "java": java_version(),
        },
    }
    if human:
        out["human"] = {"rounds": len(rounds), "seconds_warm_jvm": round(t_human, 3), "scores": {k: round(v, 6) for k, v in human_scores.items()}}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    run(main)
