"""Tiles per second of python -m pipeline.archive against python -m pipeline.caption on the same tiles, on 1 and 2
local Ray workers, its peak memory, and the cost per 1,000 km^2 that follows.

    python -m bench.archive --segmentation runs/demo/segmentation --llm runs/demo/llm/pipeline --gsd 1.0
    python -m bench.archive --segmentation runs/ucm/segmentation --llm runs/ucm/llm/pipeline --tile-size 256 \\
        --size 2560 --workers 1 2                  # 100 tiles: pipeline.caption, then the archive on 1 and 2 workers
    python -m bench.archive --segmentation runs/ucm/segmentation --llm runs/ucm/llm/pipeline --tile-size 256 \\
        --size 20000 --scene-gsd 0.15 --workers 2 --no-baseline   # a 20,000 x 20,000 scene end to end

The scene is a GeoTIFF (EPSG:32633, tiled, deflate) written here strip by strip, never whole in memory: a mosaic of
synthetic caption-set scenes (synthetic.generate.caption_sample), one per tile window, and a nodata corner (its
all-nodata tiles are skipped). ``--scene-gsd`` sets its metres per pixel (default: the models' own, so a tile is a
window read as it is; 0.15 for a 20,000 px scene at half the models' 0.3 m: windows of twice the tile size, averaged
down, and a quarter as many tiles).

Each command runs in a fresh process (model loading and Ray's start included in its wall time), its process tree
sampled every half second for the peak resident memory: the sum over the driver and every Ray process (RSS counts
shared pages such as the object store and torch's libraries once per process, so it over-states; USS, each process's
own pages, under-states) and the driver's own. The baseline is pipeline.caption on the same tiles, read by the
archive's reader and saved as PNG; the captions of the two are compared. The cost per 1,000 km^2 is the tile count
of 1,000 km^2 at ``--km2-gsd`` (the imagery's resolution; the tiles are at the models' ground resolution) over the
best rate measured: hours on this machine and core-hours. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import psutil
import rasterio
import yaml
from PIL import Image
from rasterio.transform import from_origin
from rasterio.windows import Window

from aerialdata.raster import read_tile, scene_info, tile_grid
from synthetic.generate import caption_sample
from synthetic.scenes import CATEGORIES

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false"}
POOL = 24  # distinct synthetic scenes in the mosaic


def write_scene(path: Path, size: int, gsd: float, block: int, seed: int = 0) -> Path:
    """A ``size`` x ``size`` RGB GeoTIFF at ``gsd`` m/px: synthetic scenes of ``block`` px, flipped and turned at
    random, the top-right corner nodata (0). Written one strip of blocks at a time."""
    rng = np.random.default_rng(seed)
    pool = [caption_sample(CATEGORIES[i % len(CATEGORIES)], i, seed, size=block)[0] for i in range(POOL)]
    profile = {"driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8", "crs": "EPSG:32633",
               "transform": from_origin(500_000.0, 4_000_000.0, gsd, gsd), "tiled": True, "blockxsize": 512,
               "blockysize": 512, "compress": "deflate", "nodata": 0, "BIGTIFF": "IF_SAFER"}
    with rasterio.open(path, "w", **profile) as ds:
        for y in range(0, size, block):
            h = min(block, size - y)
            strip = np.empty((h, size, 3), np.uint8)
            for x in range(0, size, block):
                tile = np.rot90(pool[int(rng.integers(POOL))], int(rng.integers(4)))
                strip[:, x : x + block] = tile[:h, : min(block, size - x)]
            strip = np.maximum(strip, 1)  # 0 is nodata
            cols = np.arange(size)[None, :]
            rows = np.arange(y, y + h)[:, None]
            strip[(cols - (size - size // 5)) > rows] = 0  # the top-right corner: nodata
            ds.write(strip.transpose(2, 0, 1), window=Window(0, y, size, h))
    return path


class TreeMemory:
    """The peak summed RSS and USS (MiB) of a process and its descendants, and its own peak RSS, sampled."""

    def __init__(self, pid: int, every: float = 0.5):
        self.proc, self.every = psutil.Process(pid), every
        self.rss = self.uss = self.driver = 0.0
        self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = uss = 0
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.driver = max(self.driver, self.proc.memory_info().rss / 2**20)
            except psutil.Error:
                break
            for p in procs:
                try:
                    info = p.memory_full_info()
                    rss, uss = rss + info.rss, uss + info.uss
                except psutil.Error:
                    continue
            self.rss, self.uss = max(self.rss, rss / 2**20), max(self.uss, uss / 2**20)
            self.processes = max(self.processes, len(procs))
            self._stop.wait(self.every)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"peak_tree_rss_mib": round(self.rss), "peak_tree_uss_mib": round(self.uss),
                "peak_driver_rss_mib": round(self.driver), "processes": self.processes}


def measured(cmd: list[str], env: dict | None = None) -> dict:
    """Run ``cmd`` from the repository: wall seconds, peak memory, exit code, the end of its stderr."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, cwd=REPO, env={**ENV, **(env or {})})
        mem = TreeMemory(p.pid)
        p.wait()
        wall = time.perf_counter() - t0
        memory = mem.stop()
        err.seek(0)
        out.seek(0)
        return {"wall_s": round(wall, 1), **memory, "exit_code": p.returncode, "stdout": out.read(),
                "stderr_tail": err.read()[-1500:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--segmentation", default="runs/demo/segmentation")
    ap.add_argument("--llm", default="runs/demo/llm/pipeline")
    ap.add_argument("--gsd", type=float, help="the models' metres per pixel (default: the checkpoint's caption_gsd)")
    ap.add_argument("--tile-size", type=int, default=224)
    ap.add_argument("--size", type=int, default=2048, help="the scene's side in pixels")
    ap.add_argument("--scene-gsd", type=float, help="the scene's metres per pixel (default: the models')")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="archive runs, one per worker count")
    ap.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                    help="also pipeline.caption on the same tiles")
    ap.add_argument("--baseline-threads", type=int, nargs="+", default=[0, 1],
                    help="pipeline.caption runs, one per torch thread count (0: torch's default)")
    ap.add_argument("--km2-gsd", type=float, default=0.3, help="imagery resolution of the cost per 1,000 km^2")
    ap.add_argument("--keep", type=Path, help="keep the scene and the outputs in this folder")
    args = ap.parse_args()

    cfg = yaml.safe_load((Path(args.segmentation) / "config.yaml").read_text())
    model_gsd = args.gsd or cfg.get("caption_gsd")
    if model_gsd is None:
        raise SystemExit(f"{args.segmentation} records no caption_gsd; pass --gsd")
    scene_gsd = args.scene_gsd or model_gsd
    block = round(args.tile_size * model_gsd / scene_gsd)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-archive-"))
    work.mkdir(parents=True, exist_ok=True)
    load = [round(x, 2) for x in os.getloadavg()]

    # 1. the scene
    t0 = time.perf_counter()
    scene = work / f"scene_{args.size}.tif"
    if not scene.is_file():
        write_scene(scene, args.size, scene_gsd, block)
    info = scene_info(scene)
    grid = tile_grid(info, model_gsd, args.tile_size)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM, no GPU"
                   if not _cuda() else f"{platform.machine()}, {os.cpu_count()} CPU cores, GPU",
        "load_average_before": load,
        "models": {"segmentation": args.segmentation, "llm": args.llm, "gsd": model_gsd, "tile_size": args.tile_size},
        "scene": {"size": [args.size, args.size], "gsd": scene_gsd, "window_px": block, "tiles": len(grid),
                  "file_mib": round(scene.stat().st_size / 2**20, 1),
                  "written_s": round(time.perf_counter() - t0, 1)},
    }
    common = ["--segmentation", args.segmentation, "--llm", args.llm]

    # 2. pipeline.caption on the same tiles (PNG files of what the archive reads)
    baseline = {}
    if args.baseline:
        folder = work / "tiles_png"
        folder.mkdir(exist_ok=True)
        for t in grid:
            rgb, valid = read_tile(info, t)
            if valid.all():  # nodata tiles are the archive's to skip; partial ones it labels unlabeled
                Image.fromarray(rgb).save(folder / f"{t.name}.png")
        images = sorted(folder.glob("*.png"))
        config = work / "caption.yaml"
        config.write_text(yaml.safe_dump({"images": [str(p) for p in images]}))
        result["pipeline_caption"] = {}
        for threads in args.baseline_threads:  # torch's default (0) and one thread, as each archive actor has
            run = measured([sys.executable, "-m", "pipeline.caption", "--config", str(config), *common, "--json",
                            str(work / "caption.json"), "--overwrite"],
                           {"OMP_NUM_THREADS": str(threads)} if threads else {})
            if run["exit_code"] != 0:
                raise SystemExit(run["stderr_tail"])
            baseline = {r["image"]: r["caption"] for r in json.loads((work / "caption.json").read_text())}
            result["pipeline_caption"][f"threads_{threads or 'default'}"] = {
                **{k: v for k, v in run.items() if k not in ("stdout", "stderr_tail")}, "tiles": len(images),
                "tiles_per_s": round(len(images) / run["wall_s"], 3)}

    # 3. the archive job on 1, 2, ... local Ray workers
    result["archive"] = {}
    for w in args.workers:
        out = work / f"archive_w{w}"
        cmd = [sys.executable, "-m", "pipeline.archive", str(scene), *common, "--out", str(out), "--workers", str(w),
               "--tile-size", str(args.tile_size), "--no-progress", "--overwrite"]
        run = measured(cmd + (["--gsd", str(args.gsd)] if args.gsd else []))
        if run["exit_code"] != 0:
            raise SystemExit(run["stderr_tail"])
        summary = json.loads((out / "summary.json").read_text())
        done = summary["this_run"]["tiles"]
        entry = {**{k: v for k, v in run.items() if k not in ("stdout", "stderr_tail")},
                 "tiles": done, "captioned": summary["captioned"], "nodata_skipped": summary["nodata_skipped"],
                 "tiles_per_s": round(done / run["wall_s"], 3),
                 "pipeline_s": summary["this_run"]["pipeline_s"],
                 "tiles_per_s_in_pipeline": summary["this_run"]["tiles_per_s"]}
        entry["geoparquet"] = _check_geoparquet(out / "tiles.parquet", summary["captioned"])
        if baseline:
            frame = gpd.read_parquet(out / "tiles.parquet", columns=["tile", "caption", "geometry"])
            got = {f"{t}.png": c for t, c in zip(frame["tile"], frame["caption"], strict=True)}
            same = [got.get(Path(k).name) == v for k, v in baseline.items()]
            entry["same_captions_as_pipeline_caption"] = f"{sum(same)}/{len(same)}"
        result["archive"][f"workers_{w}"] = entry

    # 4. the cost of 1,000 km^2
    rates = [e["tiles_per_s"] for e in result["archive"].values()]
    tile_m = args.tile_size * model_gsd
    tiles = 1e9 / (tile_m * tile_m)
    best = max(rates) if rates else None
    result["per_1000_km2"] = {
        "imagery_gsd_m": args.km2_gsd, "gigapixels": round(1e9 / args.km2_gsd**2 / 1e9, 2),
        "tiles": round(tiles), "tile_side_m": tile_m,
        "hours_on_this_machine": round(tiles / best / 3600, 1) if best else None,
        "core_hours": round(tiles / best / 3600 * (os.cpu_count() or 1), 1) if best else None,
        "note": "at the best end-to-end rate measured here; tiles are cut at the models' ground resolution, so the "
                "tile count does not depend on the imagery's",
    }
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    result["work_folder"] = str(work) if args.keep else None
    print(json.dumps(result, indent=1))


def _check_geoparquet(path: Path, captioned: int) -> dict:
    """The GeoParquet as geopandas reads it: rows, footprints and captions present."""
    frame = gpd.read_parquet(path)
    return {"rows": len(frame), "all_footprints": bool(frame.geometry.notna().all()),
            "all_captions": bool((frame["caption"].str.len() > 0).all()), "crs": str(frame.crs.to_string()),
            "rows_equal_captioned": len(frame) == captioned, "mib": round(path.stat().st_size / 2**20, 2)}


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
