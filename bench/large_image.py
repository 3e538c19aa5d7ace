"""Peak memory and time of captioning one very large photo (12000x9000 by default): read, segment, describe.

    python -m bench.large_image                                         # random weights, no caption model
    python -m bench.large_image --checkpoint runs/demo/segmentation --llm runs/demo/llm/pipeline
    python -m bench.large_image --width 6000 --height 4000 --threads 2

Prints one JSON object. The photo is a smooth random colour field with noise, saved as a JPEG in a temporary folder.
Each measurement runs in a fresh process, whose peak resident memory (``ru_maxrss``) is read when it ends:

- ``steps``: reading (``aerialdata.images.read_rgb``), segmentation (``Segmenter.predict`` at ``--scale``: sliding
  windows of the checkpoint's tile size, the overlaps blended, memory bounded in the image height) and the composition
  record (``composition.extract.extract`` on the full-size mask), each timed;
- ``pipeline_caption``: ``python -m pipeline.caption`` end to end (with ``--llm``): the command a user runs.

Before tiling in bounded memory, the same 12000x9000 photo given to pipeline.caption ran 400 s at 7.6 GB before it
was killed (issue 17).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from aerialdata.classes import load_class_table
from aerialdata.images import read_rgb
from composition.extract import extract
from segmentation.model import Segmenter, build_model, load_segmenter

REPO = Path(__file__).resolve().parents[1]


def make_photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A photo-like JPEG: a smooth colour field (an upsampled 48 x 36 grid) plus noise."""
    rng = np.random.default_rng(seed)
    field = cv2.resize(rng.integers(0, 256, (36, 48, 3), dtype=np.uint8), (width, height),
                       interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-12, 13, (height, width, 1), dtype=np.int16)
    field = np.clip(field.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    Image.fromarray(field).save(path, format="JPEG", quality=90)
    return path


def _segmenter(checkpoint: str | None) -> Segmenter:
    if checkpoint:
        return load_segmenter(checkpoint, device="cpu")
    table = load_class_table("seed10")
    torch.manual_seed(0)
    return Segmenter(build_model({}, table.num_classes), table, {}, device="cpu")


def child(photo: Path, checkpoint: str | None, scale: float) -> dict:
    """The steps, timed, in this (fresh) process."""
    t = {}
    t0 = time.perf_counter()
    seg = _segmenter(checkpoint)
    t["load_model_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    rgb = read_rgb(photo)
    t["read_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    mask = seg.predict([rgb], scale=scale)[0]
    t["segment_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    record = extract(mask, seg.table, image=photo.name)
    t["composition_s"] = round(time.perf_counter() - t0, 2)
    t["tile"] = seg.tile
    t["classes_found"] = len(record["classes"])
    t["record_size"] = [record["width"], record["height"]]
    return t


def _measured(cmd: list[str], env: dict) -> tuple[int, str, str, float, float]:
    """Run ``cmd``: (exit code, stdout, stderr, wall seconds, its peak resident memory in GiB from ``wait4``)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=REPO, env=env)
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return p.returncode, out.read(), err.read(), round(wall, 1), round(usage.ru_maxrss / 2**20, 2)  # KiB -> GiB


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=12000)
    ap.add_argument("--height", type=int, default=9000)
    ap.add_argument("--scale", type=float, default=1.0, help="segmentation scale (1.0: full resolution)")
    ap.add_argument("--checkpoint", help="segmentation checkpoint folder (default: random weights)")
    ap.add_argument("--llm", help="caption model folder: also time python -m pipeline.caption end to end")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(child(Path(args.child), args.checkpoint, args.scale)))
        return

    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        photo = make_photo(Path(tmp) / "large.jpg", args.width, args.height)
        made_s = round(time.perf_counter() - t0, 1)
        cmd = [sys.executable, "-m", "bench.large_image", "--child", str(photo), "--scale", str(args.scale),
               "--threads", str(args.threads)] + (["--checkpoint", args.checkpoint] if args.checkpoint else [])
        rc, out, err, wall, peak = _measured(cmd, env)
        if rc != 0:
            raise SystemExit(err[-2000:])
        steps = {**json.loads(out.strip().splitlines()[-1]), "wall_s": wall, "peak_rss_gib": peak}
        result = {
            "image": f"{args.width}x{args.height} JPEG ({photo.stat().st_size / 2**20:.1f} MiB, made in {made_s} s)",
            "megapixels": round(args.width * args.height / 1e6, 1), "scale": args.scale,
            "checkpoint": args.checkpoint or "random weights, default architecture",
            "steps": steps,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, "
                       f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM",
            "threads": args.threads or torch.get_num_threads(),
        }
        if args.llm and args.checkpoint:
            cmd = [sys.executable, "-m", "pipeline.caption", str(photo), "--segmentation", args.checkpoint,
                   "--llm", args.llm, "--scale", str(args.scale), "--overlay", str(Path(tmp) / "overlay.png")]
            rc, out, err, wall, peak = _measured(cmd, env)
            result["pipeline_caption"] = {"wall_s": wall, "peak_rss_gib": peak, "exit_code": rc,
                                          "caption": out.strip().splitlines()[-1][-200:] if out.strip() else err[-300:]}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
