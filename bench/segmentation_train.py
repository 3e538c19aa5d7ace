"""Segmentation training on the default synthetic data: val mIoU and caption-set test mIoU against training minutes.

    python -m synthetic.generate --out data/synthetic          # once
    python -m bench.segmentation_train                          # configs/segmentation.yaml, as `make demo` trains
    python -m bench.segmentation_train --out runs/bench_seg --epochs 20 --train-config configs/segmentation.yaml

Trains with the default config (a fresh output folder each run, ``--overwrite``), then prints one JSON object: the
best epoch's drone val mIoU and pixel accuracy, the caption set's test-split mIoU (the figure that matters: after the
scale gap), per-class IoU of both, and the history (mIoU against wall-clock minutes). The 2 CPU cores may be shared
with other work: the load average before and after is printed, and minutes measured under load are pessimistic.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from pathlib import Path

import torch

from segcap.cli import parse, run
from segmentation import train

REPO = Path(__file__).resolve().parents[1]


def main(train_config: str = str(REPO / "configs" / "segmentation.yaml"), out: str = "runs/bench_segmentation",
         threads: int = 2, epochs: int | None = None, target_scale: float | None = None,
         classes: str | None = None) -> dict:
    args = ["--config", train_config, "--out", out, "--overwrite", "--no-progress", "--threads", str(threads)]
    if classes:
        args += ["--classes", classes]
    if epochs:
        args += ["--epochs", str(epochs)]
    if target_scale:
        args += ["--target-scale", str(target_scale)]
    kwargs = parse(train.main, args)
    load0 = os.getloadavg()
    with contextlib.redirect_stdout(sys.stderr):  # epoch lines on stderr: stdout is the one JSON object
        m = train.main(**kwargs)
    caps = m.get("captions") or {}
    val = m.get("val") or {}
    result = {
        "bench": "segmentation_train",
        "config": train_config,
        "options": {k: kwargs[k] for k in ("classes", "target_scale", "scale_jitter", "crop_size", "batch_size", "epochs",
                                           "eval_every", "lr", "schedule", "loss", "decoder_channels")},
        "train_images": m["train"]["images"], "val_images": m["train"]["val_images"],
        "best_epoch": m["best_epoch"],
        "val_miou": val.get("miou"), "val_pixel_accuracy": val.get("pixel_accuracy"),
        "caption_test_miou": caps.get("miou"), "caption_test_pixel_accuracy": caps.get("pixel_accuracy"),
        "caption_test_images": caps.get("images"),
        "minutes": m["train"]["minutes"], "train_minutes": m["train"]["train_minutes"],
        "target_val_miou": 0.80, "meets_target": (val.get("miou") or 0) >= 0.80,
        "val_miou_resolved_classes": m["resolution"]["val_miou_resolved_classes"],
        "caption_miou_resolved_classes": m["resolution"]["caption_miou_resolved_classes"],
        "val_below_resolution": (m["resolution"]["val"] or {}).get("below_resolution"),
        "val_block_share": (m["resolution"]["val"] or {}).get("block_share"),
        "val_per_class_iou": val.get("per_class_iou"),
        "caption_per_class_iou": caps.get("per_class_iou"),
        "history": [{k: h.get(k) for k in ("epoch", "minutes", "train_minutes", "train_loss", "val_miou",
                                            "caption_miou")} for h in m["history"] if h.get("val_miou") is not None
                    or h.get("caption_miou") is not None],
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_avg_before": [round(v, 2) for v in load0],
                    "load_avg_after": [round(v, 2) for v in os.getloadavg()]},
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":

    run(main)
