"""Benchmark: the tiny caption LM on the synthetic data (the fine-tune `make demo` runs), and its caption scores.

    python -m bench.llm_caption                       # tiny.yaml, ground-truth-mask compositions, test split
    python -m bench.llm_caption --blind               # also the blind LM (same template, no composition text)
    python -m bench.llm_caption --threads 2 --out runs/bench/llm_tiny

Makes what it needs when missing: the synthetic data (`python -m synthetic.generate --out data/synthetic`) and the
ground-truth compositions (`python -m composition.extract --masks .../label_images_semantic --source-ids`). Then runs
`python -m llm.finetune --config configs/llm/tiny.yaml` (timed: wall seconds and CPU seconds of the process), captions
the test split greedily, and scores it with `evaluation.score` next to the human-agreement ceiling. Prints one JSON
object. Wall times measured while other work shares the cores are pessimistic; CPU seconds / threads is the time on
idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from aerialdata.captionset import CaptionDataset
from composition.schema import read_jsonl
from evaluation.score import human_ceiling, score_captions
from llm.generate import Captioner

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], log: Path) -> dict:
    """Run a child process; return its wall and CPU seconds (raise with the log tail on failure)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def _ensure_inputs(data: Path, compositions: Path, work: Path) -> dict:
    made = {}
    capjson = data / "rsicd" / "dataset_rsicd.json"
    if not capjson.is_file():
        made["synthetic"] = _run([sys.executable, "-m", "synthetic.generate", "--out", str(data), "--no-progress"],
                                 work / "synthetic.log")
    if not compositions.is_file():
        made["compositions"] = _run(
            [sys.executable, "-m", "composition.extract", "--masks", str(data / "rsicd" / "label_images_semantic"),
             "--source-ids", "--out", str(compositions)], work / "extract.log")
    return made


def _train_and_score(name: str, args, extra: list[str], capjson: Path, refs: dict, scorer) -> dict:

    out = args.out / name
    cmd = [sys.executable, "-m", "llm.finetune", "--config", str(args.config), "--compositions", str(args.compositions),
           "--captions", str(capjson), "--out", str(out), "--overwrite", "--no-progress", *extra]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    timing = _run(cmd, args.out / f"{name}.log") if not args.reuse or not (out / "segcap_llm.json").is_file() else {}
    meta = json.loads((out / "segcap_llm.json").read_text())

    by_stem = {Path(r["image"]).stem: r for r in read_jsonl(args.compositions)}
    names = list(refs)
    records = [by_stem[Path(n).stem] for n in names]
    cap = Captioner(out, batch_size=64)
    t0 = time.perf_counter()
    preds = cap.caption(records, num_beams=1)
    gen_s = time.perf_counter() - t0
    pred_map = dict(zip(names, preds, strict=True))
    (out / "preds_test.json").write_text(json.dumps([{"image_id": n, "caption": c} for n, c in pred_map.items()],
                                                    indent=1))
    scores = scorer(pred_map, refs)
    fig = meta["figures"]
    return {
        "finetune": {**timing, "epochs": fig["epochs"], "steps": fig["steps"], "train_examples": fig["train_examples"],
                     "train_images": fig["train_images"], "duplicates_dropped": fig["train_duplicates_dropped"],
                     "parameters": fig["parameters"], "vocab_size": fig["vocab_size"],
                     "final_eval_loss": round(fig["eval_loss"][-1], 4) if fig["eval_loss"] else None},
        "greedy_test": {k: round(v, 4) for k, v in scores.items()},
        "generate_s": round(gen_s, 2),
        "distinct_captions": len(set(preds)),
        "examples": [{"image_id": n, "caption": pred_map[n], "reference": refs[n][0]} for n in names[:: max(1, len(names) // 4)][:4]],
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=REPO / "data" / "synthetic", help="synthetic data root")
    p.add_argument("--compositions", type=Path, default=REPO / "runs" / "gt" / "compositions.jsonl",
                   help="ground-truth-mask compositions of the caption set")
    p.add_argument("--config", type=Path, default=REPO / "configs" / "llm" / "tiny.yaml")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "llm_tiny")
    p.add_argument("--split", default="test")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    p.add_argument("--blind", action="store_true", help="also train and score the blind LM")
    p.add_argument("--reuse", action="store_true", help="score existing models in --out instead of retraining")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)

    made = _ensure_inputs(args.data, args.compositions, args.out)
    capjson = args.data / "rsicd" / "dataset_rsicd.json"

    refs = CaptionDataset(capjson, split=args.split).references()
    result = {
        "bench": "llm_caption",
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "config": str(args.config.relative_to(REPO) if args.config.is_relative_to(REPO) else args.config),
        "split": args.split,
        "test_images": len(refs),
        "prepared": made,
        "full": _train_and_score("full", args, [], capjson, refs, score_captions),
    }
    if args.blind:
        result["blind"] = _train_and_score("blind", args, ["--prompt-mode", "blind"], capjson, refs, score_captions)
    result["human_ceiling"] = {k: round(v, 4) for k, v in human_ceiling(refs).items()}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
