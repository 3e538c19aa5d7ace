"""Segmentation prediction throughput at 224x224 on CPU: batched :class:`Segmenter` vs a naive loop, same run.

    python -m bench.segmentation_predict                                  # random weights, default architecture
    python -m bench.segmentation_predict --checkpoint runs/segmentation   # a trained checkpoint
    python -m bench.segmentation_predict --threads 2 --images 256 --batch-sizes 16 32

Prints one JSON object. Paths measured on the same images (RSICD-sized 224x224 RGB uint8, in memory):

- ``naive``: one image at a time, ``torch.no_grad``, NCHW float tensors: what a first script does;
- ``batched``: ``Segmenter.predict`` (inference mode, channels-last, batches of B, same-size batching);
- ``cli``: ``python -m segmentation.predict`` end to end on a folder of JPEGs (decode in a worker, write palette PNGs).

Wall-clock rates are what a user sees; when other processes share the cores they are pessimistic, so the load
average (``uptime``) before and after is printed too, and ``cpu_rate`` = images per (process CPU seconds / threads),
an estimate of the rate on otherwise idle cores.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from aerialdata.classes import load_class_table
from aerialdata.images import list_images, read_rgb
from segcap.cli import run
from segmentation import predict
from segmentation.model import Segmenter, build_model, load_segmenter

REPO = Path(__file__).resolve().parents[1]


def _images(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random colour fields (JPEG-friendly), or the synthetic caption set's images when present."""
    folder = REPO / "data" / "synthetic" / "rsicd" / "RSICD_images"
    if folder.is_dir():
        files = list_images(folder)[:n]
        ims = [read_rgb(f) for f in files if read_rgb(f).shape[:2] == (size, size)]
        if len(ims) >= n // 2:
            while len(ims) < n:
                ims += ims[: n - len(ims)]
            return ims
    rng = np.random.default_rng(seed)

    return [cv2.resize(rng.integers(0, 256, (14, 14, 3), dtype=np.uint8), (size, size)) for _ in range(n)]


def _timed(fn) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def naive(seg: Segmenter, images: list[np.ndarray]) -> None:
    model = seg.model.to(memory_format=torch.contiguous_format)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        for im in images:
            x = torch.from_numpy(im).permute(2, 0, 1)[None].float().div(255).contiguous()
            model((x - mean) / std).argmax(1)[0].numpy().astype(np.uint8)
    seg.model.to(memory_format=torch.channels_last)


def main(checkpoint: str | None = None, threads: int = 2, images: int = 128, size: int = 224,
         batch_sizes: tuple[int, ...] = (8, 16, 32), naive_images: int = 32, cli: bool = True,
         repeats: int = 2) -> dict:
    torch.set_num_threads(threads)
    load0 = os.getloadavg()
    if checkpoint:
        seg = load_segmenter(checkpoint, device="cpu")
        source = str(checkpoint)
    else:
        cfg = yaml.safe_load((REPO / "configs" / "segmentation.yaml").read_text())
        table = load_class_table(cfg.get("classes", "seed10"))
        torch.manual_seed(0)
        model = build_model({"decoder_channels": cfg["decoder_channels"]}, table.num_classes)
        seg = Segmenter(model, table, {}, device="cpu")
        source = f"random weights, decoder_channels={cfg['decoder_channels']}"
    ims = _images(images, size)
    seg.predict(ims[:8], batch_size=8)  # warm-up

    out: dict = {"bench": "segmentation_predict", "model": source, "image_size": size, "images": len(ims)}
    # naive loop and batched paths, interleaved `repeats` times; the best of each is kept
    res: dict[str, list[tuple[float, float, int]]] = {}
    for _ in range(repeats):
        w, c = _timed(lambda: naive(seg, ims[:naive_images]))
        res.setdefault("naive", []).append((w, c, naive_images))
        for b in batch_sizes:
            w, c = _timed(lambda b=b: seg.predict(ims, batch_size=b))
            res.setdefault(f"batched_{b}", []).append((w, c, len(ims)))
    for k, runs in res.items():
        w, c, n = min(runs)
        out[k] = {"images_per_s": round(n / w, 2), "cpu_rate": round(n / (c / threads), 2), "ms_per_image":
                  round(1000 * w / n, 2)}
    best = max((k for k in res if k.startswith("batched")), key=lambda k: out[k]["images_per_s"])
    out["best_batched"] = best
    out["speedup_vs_naive"] = round(out[best]["images_per_s"] / out["naive"]["images_per_s"], 2)
    out["target_images_per_s"] = 30
    out["meets_target"] = out[best]["images_per_s"] >= 30

    if cli and checkpoint:
        from PIL import Image

        tmp = Path(tempfile.mkdtemp(prefix="segbench_"))
        try:
            (tmp / "im").mkdir()
            for i, im in enumerate(ims):
                Image.fromarray(im).save(tmp / "im" / f"{i:04d}.jpg", quality=90)
            b = int(best.split("_")[1])
            w, c = _timed(lambda: predict.main(checkpoint=Path(checkpoint), images=tmp / "im", out=tmp / "out",
                                                batch_size=b, workers=1, progress=False))
            out["cli_end_to_end"] = {"images_per_s": round(len(ims) / w, 2), "batch_size": b, "workers": 1,
                                     "note": "includes model loading, JPEG decoding and PNG writing"}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    out["machine"] = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                      "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                      "load_avg_before": [round(v, 2) for v in load0],
                      "load_avg_after": [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":

    run(main)
