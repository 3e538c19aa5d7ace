"""Benchmark: captions per second of the end-to-end captioners on CPU, greedy and beam search.

    python -m bench.captioners_speed                                  # the three archs, demo-sized, untrained
    python -m bench.captioners_speed --model runs/demo/captioners/cnn_lstm --images 192 --threads 2

Captions ``--images`` images (the synthetic test split's when present, repeated as needed; else seeded noise) in
batches of ``--batch-size``, greedy and with ``--beams`` beams, after one warm-up batch, with:

* ``cnn-lstm``: the architecture of configs/captioners/synthetic.yaml (random weights, vocabulary of the synthetic
  captions), and the trained model at ``--model`` when that folder exists (real caption lengths);
* ``vit-gpt2``: the tiny ViT + GPT-2 of configs/captioners/vit-gpt2-tiny.yaml (random weights);
* ``blip``: a tiny BLIP (hidden size 128, 128 px, one layer each side; random weights).

An untrained model seldom ends a caption early, so every caption it writes is ``--max-length`` words or tokens long
(``mean_words`` says what was written). Prints one JSON object.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from aerialdata.captionset import CaptionDataset
from aerialdata.images import read_rgb
from captioners.base import Captioner, resolve_device
from captioners.cnn_lstm import CnnLstm, CnnLstmCaptioner, CnnLstmOptions, pixels
from captioners.encoders import calibrate_batchnorm
from captioners.hf import HFCaptioner, build_tiny_vit_gpt2, load_checkpoint, tiny_blip_checkpoint
from captioners.model import load_captioner
from captioners.text import Vocabulary
from segcap.cli import run

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "data" / "synthetic" / "rsicd" / "dataset_rsicd.json"
CONFIGS = REPO / "configs" / "captioners"


def main(model: Path = REPO / "runs" / "demo" / "captioners" / "cnn_lstm", captions: Path = SYNTHETIC,
         images: int = 96, batch_size: int = 32, beams: int = 3, max_length: int = 10, threads: int = 0) -> dict:
    """Captions per second of cnn-lstm, tiny vit-gpt2 and tiny blip on CPU, greedy and beam search.

    Args:
        model: a trained cnn-lstm folder, also measured when it exists.
        captions: caption set whose test images are captioned (seeded noise images when it is absent).
        images: images per measurement.
        batch_size: images per forward pass.
        beams: beam width of the beam-search measurement.
        max_length: longest caption of the untrained models, in words or tokens.
        threads: torch CPU threads (0: torch's default).
    """
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    pics, texts = _images(captions, images)
    device = resolve_device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        captioners: dict[str, Captioner] = {
            "cnn-lstm": _cnn_lstm(texts, pics, device),
            "vit-gpt2": _vit_gpt2(texts, device),
            "blip": HFCaptioner("blip", *load_checkpoint(tiny_blip_checkpoint(Path(tmp) / "blip", texts, 128, 128),
                                                         "blip"), "tiny", device),
        }
        if (Path(model) / "captioner.yaml").is_file():
            captioners["cnn-lstm (trained)"] = load_captioner(model, device="cpu")
        figures = {name: _measure(cap, pics, batch_size, beams, None if "trained" in name else max_length)
                   for name, cap in captioners.items()}
    result = {
        "bench": "captioners_speed",
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "images": len(pics),
        "image_size": list(pics[0].shape),
        "batch_size": batch_size,
        **figures,
    }
    print(json.dumps(result, indent=1))
    return result


def _images(captions: Path, n: int) -> tuple[list[np.ndarray], list[str]]:
    if Path(captions).is_file():
        ds = CaptionDataset(captions)
        test = [it for it in ds.items if it.split == "test"] or ds.items
        pics = [read_rgb(ds.image_path(it.filename)) for it in test[: n]]
        texts = [s for it in ds.items if it.split == "train" for s in it.sentences]
    else:
        rng = np.random.default_rng(0)
        pics = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(min(n, 32))]
        texts = ["a pond is surrounded by green trees", "many buildings and green trees are in a dense residential area"]
    return (pics * (n // len(pics) + 1))[:n], texts


def _cnn_lstm(texts: list[str], pics: list[np.ndarray], device: torch.device) -> Captioner:
    cfg = yaml.safe_load((CONFIGS / "synthetic.yaml").read_text())
    opts = CnnLstmOptions(**{k: cfg[k] for k in CnnLstmOptions.__dataclass_fields__ if k in cfg})
    vocab = Vocabulary.build(texts, cfg.get("min_count", 5))
    model = CnnLstm(opts, len(vocab))
    calibrate_batchnorm(model.trunk, [pixels(pics[:64], opts.image_size)])  # as training does for random weights
    return CnnLstmCaptioner(model, vocab, "untrained", device)


def _vit_gpt2(texts: list[str], device: torch.device) -> Captioner:
    cfg = yaml.safe_load((CONFIGS / "vit-gpt2-tiny.yaml").read_text())
    vocab = Vocabulary.build(texts, cfg.get("min_count", 5))
    model, tok, proc = build_tiny_vit_gpt2(vocab, cfg["image_size"], cfg["tiny_model"], cfg["max_length"])
    return HFCaptioner("vit-gpt2", model, tok, proc, "tiny", device, cfg["max_length"], words=True)


def _measure(cap: Captioner, pics: list[np.ndarray], batch_size: int, beams: int, max_length: int | None) -> dict:
    cap.caption(pics[:batch_size], max_length=max_length)  # warm-up
    out: dict = {"parameters": cap.parameters()}
    for width in (1, beams):
        t0, c0 = time.perf_counter(), time.process_time()
        caps = cap.caption(pics, num_beams=width, batch_size=batch_size, max_length=max_length)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        out["greedy" if width == 1 else f"beams_{width}"] = {
            "captions_per_s": round(len(caps) / wall, 1),
            "captions_per_cpu_s": round(len(caps) / cpu, 1),
            "mean_words": round(sum(len(c.split()) for c in caps) / len(caps), 1),
        }
    return out


if __name__ == "__main__":
    run(main)
