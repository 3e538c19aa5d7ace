"""Speed of the synthetic generator on one core, files written included; prints one JSON object.

    python -m bench.synthetic_speed
    python -m bench.synthetic_speed --caption-images 600 --drone-images 100

Threads are limited to one (OpenMP, BLAS, OpenCV) before numpy and OpenCV load. Both the wall-clock rate and the
CPU-time rate are reported: on a machine shared with other jobs the CPU-time rate is the steadier figure.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

from segcap.cli import run  # noqa: E402
from synthetic.generate import generate  # noqa: E402
from synthetic.materials import canopy_shade, tiles  # noqa: E402


def _timed(**kw) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        w0, c0 = time.perf_counter(), time.process_time()
        generate(Path(d) / "s", progress=False, **kw)
        return time.perf_counter() - w0, time.process_time() - c0


def main(caption_images: int = 480, drone_images: int = 60, caption_size: int = 224, seed: int = 0) -> dict:
    """Time caption-set and drone-set generation separately.

    Args:
        caption_images: caption-set images to time (spread over all categories).
        drone_images: drone images to time (default size 480x320, scale 4).
        caption_size: caption image side in pixels.
        seed: random seed.
    """
    cv2.setNumThreads(1)
    tiles(), canopy_shade(round(caption_size / 224, 2)), canopy_shade(round(4 * caption_size / 224, 2))  # warm caches
    cw, cc = _timed(seed=seed, caption_images=caption_images, drone_images=0, caption_size=caption_size)
    dw, dc = _timed(seed=seed, caption_images=0, drone_images=drone_images)
    out = {
        "caption_images": caption_images,
        "caption_size": caption_size,
        "caption_images_per_s": round(caption_images / cw, 1),
        "caption_images_per_cpu_s": round(caption_images / cc, 1),
        "drone_images": drone_images,
        "drone_size": [480, 320],
        "drone_images_per_s": round(drone_images / dw, 1),
        "drone_images_per_cpu_s": round(drone_images / dc, 1),
        "threads": 1,
        "machine": {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                    "torch_threads": None, "load_average_1min": round(os.getloadavg()[0], 2)},
        "note": "includes JPEG/PNG encoding and writing; torch is not used",
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":

    run(main)
