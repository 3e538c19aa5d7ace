"""Segmentation training on the default synthetic data: val mIoU and caption-set test mIoU against training minutes.

    python -m synthetic.generate --out data/synthetic          # once
    python -m bench.segmentation_train                          # configs/segmentation.yaml, as `make demo` trains
    python -m bench.segmentation_train --out runs/bench_seg --epochs 20 --train-config configs/segmentation.yaml
    python -m bench.segmentation_train --epochs 3 --eval-every 1000      # seconds per epoch of training alone

Trains with the default config (a fresh output folder each run, ``--overwrite``), then prints one JSON object: the
best epoch's drone val mIoU and pixel accuracy, the caption set's test-split mIoU (the figure that matters: after the
scale gap), per-class IoU of both, and the history (mIoU against wall-clock minutes); with a config of several
``sources``, each source's scale and val mIoU too. The 2 CPU cores may be shared
with other work: the load average before and after is printed, and minutes measured under load are pessimistic.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

from segcap.cli import parse, run
from segmentation import train

REPO = Path(__file__).resolve().parents[1]


def main(train_config: str = str(REPO / "configs" / "segmentation.yaml"), out: str = "runs/bench_segmentation",
         threads: int = 2, epochs: int | None = None, target_scale: float | None = None,
         classes: str | None = None, eval_every: int | None = None, device: str | None = None) -> dict:
    """Train with ``train_config`` (options below override it) and print the figures as one JSON object.

    Args:
        train_config: segmentation.train YAML config.
        out: output folder (replaced).
        threads: torch CPU threads.
        epochs: override the config's epochs.
        target_scale: override the config's target_scale.
        classes: override the config's class table.
        eval_every: override the config's eval_every (a large value times training alone: only the last epoch
            is evaluated).
        device: override the device (auto, cpu, cuda).
    """
    args = ["--config", train_config, "--out", out, "--overwrite", "--no-progress", "--threads", str(threads)]
    for flag, value in (("--classes", classes), ("--epochs", epochs), ("--target-scale", target_scale),
                        ("--eval-every", eval_every), ("--device", device)):
        if value:
            args += [flag, str(value)]
    kwargs = parse(train.main, args)
    load0 = os.getloadavg()
    with contextlib.redirect_stdout(sys.stderr):  # epoch lines on stderr: stdout is the one JSON object
        m = train.main(**kwargs)
    caps = m.get("captions") or {}
    val = m.get("val") or {}
    result = {
        "bench": "segmentation_train",
        "config": train_config,
        "options": {k: kwargs[k] for k in ("classes", "target_scale", "caption_gsd", "scale_jitter", "crop_size",
                                           "batch_size", "epochs", "eval_every", "lr", "schedule", "loss",
                                           "decoder_channels")},
        "sources": [{k: s[k] for k in ("label", "root", "gsd", "scale", "synthetic", "images", "val_images",
                                       "crops_per_image")} for s in m["train"].get("sources", [])] or None,
        "val_miou_by_source": {k: (v or {}).get("miou") for k, v in m["val_sources"].items()}
        if m.get("val_sources") else None,
        "train_images": m["train"]["images"], "val_images": m["train"]["val_images"],
        "best_epoch": m["best_epoch"],
        "val_miou": val.get("miou"), "val_pixel_accuracy": val.get("pixel_accuracy"),
        "caption_test_miou": caps.get("miou"), "caption_test_pixel_accuracy": caps.get("pixel_accuracy"),
        "caption_test_images": caps.get("images"),
        "minutes": m["train"]["minutes"], "train_minutes": m["train"]["train_minutes"],
        "seconds_per_epoch": _seconds_per_epoch(m["history"]),
        "device": m["train"]["device"], "precision": m["train"].get("precision"),
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


def _seconds_per_epoch(history: list[dict]) -> float | None:
    """Median training seconds of an epoch (evaluation excluded), from the history's cumulative train minutes."""
    marks = [0.0] + [h["train_minutes"] for h in history]
    per_epoch = [60 * (b - a) for a, b in zip(marks, marks[1:], strict=False)]
    return round(statistics.median(per_epoch), 3) if per_epoch else None


if __name__ == "__main__":

    run(main)
