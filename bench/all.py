"""Run the quick benchmarks one after another (`make bench`) and print one JSON object of their figures.

    python -m bench.all                     # synthetic, composition, evaluation, prediction and generation speed
                                            # (prediction and generation on the models `make demo` trained),
                                            # one 12000x9000 photo's peak memory and time (minutes on 2 cores), and
                                            # a GeoTIFF through pipeline.archive against pipeline.caption
    python -m bench.all --with-training     # + segmentation training (about 7 min) and the tiny LM fine-tune + scores

Each benchmark also runs on its own (`python -m bench.<name>`); run them on idle cores, the figures are wall-clock.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICK = [
    ["bench.synthetic_speed"],
    ["bench.composition_speed"],
    ["bench.evaluation_speed"],
    ["bench.segmentation_predict", "--checkpoint", "runs/demo/segmentation"],
    ["bench.llm_throughput", "--model", "runs/demo/llm/pipeline", "--compositions",
     "runs/demo/compositions/predicted.jsonl"],
    ["bench.caption_modes"],  # captions/s greedy, beam, consensus (beam, sample); with and without retrieval
    ["bench.app_latency"],  # the web app: one 224x224 image from upload to caption (skips itself without runs/demo)
    ["bench.large_image", "--checkpoint", "runs/demo/segmentation"],
    ["bench.captioners_speed"],  # end-to-end captioners, untrained and (when `make demo` trained it) the demo's cnn-lstm
    # a GeoTIFF of 36 tiles through pipeline.caption and pipeline.archive on 1 and 2 local Ray workers (a few minutes)
    ["bench.archive", "--segmentation", "runs/demo/segmentation", "--llm", "runs/demo/llm/pipeline", "--gsd", "1.0",
     "--size", "1344"],
]
# what a quick benchmark needs from `make demo`
NEEDS = {"bench.segmentation_predict": "runs/demo/segmentation/model.pt",
         "bench.large_image": "runs/demo/segmentation/model.pt",
         "bench.llm_throughput": "runs/demo/llm/pipeline/segcap_llm.json",
         "bench.caption_modes": "runs/demo/llm/pipeline/segcap_llm.json",
         "bench.archive": "runs/demo/llm/pipeline/segcap_llm.json"}
TRAINING = [["bench.segmentation_train"], ["bench.llm_caption", "--blind"]]


def _last_json(stdout: str) -> dict:
    """The JSON object a benchmark printed last (indented over many lines, or on one)."""
    lines = stdout.rstrip().splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("{"):
            try:
                return json.loads("\n".join(lines[i:]))
            except json.JSONDecodeError:
                continue
    return {"failed": "no JSON on stdout", "stdout_tail": stdout[-300:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--with-training", action="store_true", help="also the training benchmarks (minutes)")
    args = ap.parse_args()
    results = {}
    for cmd in QUICK + (TRAINING if args.with_training else []):
        need = NEEDS.get(cmd[0])
        if need and not (REPO / need).is_file():
            results[cmd[0]] = {"skipped": f"{need} not found: run `make demo` first"}
            continue
        print(f"running python -m {' '.join(cmd)}", file=sys.stderr, flush=True)
        r = subprocess.run([sys.executable, "-m", *cmd], capture_output=True, text=True, cwd=REPO)
        results[cmd[0]] = _last_json(r.stdout) if r.returncode == 0 else {"failed": r.stderr.strip().splitlines()[-1:]}
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
