"""Benchmark: what retrieval and consensus decoding cost in captions/s (the demo's caption LMs, CPU).

    python -m bench.caption_modes                                    # runs/demo/llm/{pipeline,pipeline_rag}
    python -m bench.caption_modes --models runs/demo/llm/pipeline --images 192 --consensus 5 --threads 2

For each model folder, captions ``--images`` composition records (the demo's predicted test compositions, repeated as
needed) greedy, with beam search (3 beams), by consensus of ``--consensus`` candidates from beam search and from
sampling, and by consensus of the beam candidates and the captions of ``--pool`` training neighbours (pipeline_pool),
after one warm-up batch; a retrieval model's time includes finding each image's neighbours, and the pool's the
model's probability of every pooled caption. Prints one JSON object: captions/s per model and mode.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from aerialdata.captionset import CaptionDataset
from composition.schema import read_jsonl
from llm.generate import Captioner

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "runs" / "demo"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, nargs="+", default=[DEMO / "llm" / "pipeline", DEMO / "llm" / "pipeline_rag"])
    p.add_argument("--compositions", type=Path, default=DEMO / "compositions" / "predicted.jsonl")
    p.add_argument("--captions", type=Path, default=REPO / "data" / "synthetic" / "rsicd" / "dataset_rsicd.json",
                   help="caption set whose test split is captioned (its images' compositions)")
    p.add_argument("--images", type=int, default=192, help="captions per measurement")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--consensus", type=int, default=5, help="candidates per image of consensus decoding")
    p.add_argument("--pool", type=int, default=5, help="training neighbours whose captions the pool mode counts")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m for m in args.models if (m / "segcap_llm.json").is_file()]
    if not models or not args.compositions.is_file():
        raise SystemExit(f"error: no trained model among {', '.join(map(str, args.models))} or no "
                         f"{args.compositions}; run `make demo` first")

    records = read_jsonl(args.compositions)
    if args.captions.is_file():  # the test split's records, as the demo captions them
        test = {Path(it.filename).stem for it in CaptionDataset(args.captions, split="test")}
        records = [r for r in records if Path(r["image"]).stem in test] or records
    records = (records * (args.images // max(1, len(records)) + 1))[: args.images]
    modes = {"greedy": {}, "beam3": {"num_beams": 3},
             f"consensus{args.consensus}_beam": {"consensus": args.consensus, "candidates": "beam"},
             f"consensus{args.consensus}_sample": {"consensus": args.consensus, "candidates": "sample"},
             f"consensus{args.consensus}_pool{args.pool}": {"consensus": args.consensus, "pool": args.pool}}
    result = {
        "bench": "caption_modes",
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "images": len(records),
        "batch_size": args.batch_size,
    }
    for model in models:
        cap = Captioner(model, batch_size=args.batch_size)
        cap.caption(records[: args.batch_size])  # warm-up
        figures = {"retrieval_k": cap.template.retrieval_k}
        for name, kw in modes.items():
            if kw.get("pool") and cap.index is None:  # a folder from before every model saved its index
                figures[f"{name}_captions_per_s"] = None
                continue
            t0 = time.perf_counter()
            caps = cap.caption(records, **kw)
            figures[f"{name}_captions_per_s"] = round(len(caps) / (time.perf_counter() - t0), 1)
        result[model.name] = figures
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
