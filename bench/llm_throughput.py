"""Benchmark: caption generation throughput of a trained caption LM on CPU (greedy and beam search).

    python -m bench.llm_throughput                                   # the model bench.llm_caption trained
    python -m bench.llm_throughput --model runs/llm/tiny --images 256 --batch-size 64 --threads 2

Captions ``--images`` composition records (the test split's, repeated as needed) in batches of ``--batch-size``,
greedy and with 3 beams, after one warm-up batch; prints captions/s and mean caption length as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from composition.schema import read_jsonl
from llm.generate import Captioner

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, default=REPO / "runs" / "bench" / "llm_tiny" / "full")
    p.add_argument("--compositions", type=Path, default=REPO / "runs" / "gt" / "compositions.jsonl")
    p.add_argument("--images", type=int, default=256, help="captions per measurement")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for what, path in (("model", args.model / "segcap_llm.json"), ("compositions", args.compositions)):
        if not path.exists():
            raise SystemExit(f"error: {what} not found: {path}; run `python -m bench.llm_caption` first")


    records = read_jsonl(args.compositions)
    records = (records * (args.images // max(1, len(records)) + 1))[: args.images]
    cap = Captioner(args.model, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
    cap.caption(records[: args.batch_size])  # warm-up
    runs = {}
    for beams in args.beams:
        t0, c0 = time.perf_counter(), time.process_time()
        caps = cap.caption(records, num_beams=beams)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        runs[f"beams_{beams}"] = {
            "captions_per_s": round(len(caps) / wall, 1),
            "captions_per_cpu_s": round(len(caps) / cpu, 1),
            "wall_s": round(wall, 2),
            "mean_caption_tokens": round(
                sum(len(cap.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in caps) / len(caps), 1),
        }
    result = {
        "bench": "llm_throughput",
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "model": str(args.model),
        "parameters": sum(p.numel() for p in cap.model.parameters()),
        "images": len(records),
        "batch_size": args.batch_size,
        **runs,
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
