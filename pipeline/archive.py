"""Caption a whole archive: GeoTIFF scenes cut into tiles at the caption models' ground resolution, and folders of
plain tiles, as a Ray Data pipeline (read -> segment -> compose -> caption -> write); GeoParquet out.

    pip install -e '.[scale]'
    python -m pipeline.archive scenes/*.tif --segmentation runs/demo/segmentation --llm runs/demo/llm/pipeline \\
        --gsd 0.5 --out runs/archive                                   # local Ray, no cluster needed
    python -m pipeline.archive scenes/*.tif tiles/ --segmentation DIR --llm DIR --out runs/archive \\
        --overlap 0.25 --bands 4 3 2                                   # + a folder of tiles; bands 4, 3, 2 as RGB
    python -m pipeline.archive scenes/*.tif --segmentation DIR --llm DIR --out /shared/archive \\
        --address auto                                                 # the same on a running Ray cluster
    python -m pipeline.archive ...                                     # again: only the tiles not done yet

Scenes (any raster GDAL reads: GeoTIFF, COG, VRT; read in windows, never whole) are cut into tiles of ``--tile-size``
px at the caption models' ground resolution: the segmentation checkpoint's ``caption_gsd`` (``--gsd`` overrides it),
the scene's own from its transform and CRS. Tiles overlap by ``--overlap`` (a fraction); the last ones along each side
end at the scene's edge. Tiles whose every pixel is nodata are skipped and counted. A folder's images are tiles as
they are, each captioned as ``pipeline.caption`` captions it: the same tile gives the same caption, byte for byte.

Outputs in ``--out``: ``tiles.parquet`` (GeoParquet: footprint, scene, window, class percentages, record, caption,
models; :func:`pipeline.archive_outputs.geo_frame`), ``tiles.geojson`` (EPSG:4326, jobs of up to 10,000 tiles),
``overviews/<scene>.png``, ``summary.json``; ``parts/`` holds the tiles as they are finished and ``job.json`` the
settings, so a rerun (after a crash, a kill, or with more inputs) captions only what is missing, and a rerun with
nothing missing writes nothing. docs/archive.md: opening the outputs in QGIS and geopandas, and measured speed.

Ray runs locally by default (``--workers`` segmenters, a captioner per 4 of them, as many readers and composers:
here ``--workers`` counts Ray workers, not the data-loading processes it counts in the other commands); ``--address``
joins a running cluster, whose nodes need segcap installed and the inputs and models at the same paths
(this process writes ``--out``).
Failed tasks are retried and dead actors restarted by Ray; the parts written stay written whatever happens.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from aerialdata.classes import class_table_from_dict
from aerialdata.images import list_images
from aerialdata.raster import SceneInfo, scene_id, scene_info, tile_grid
from llm.generate import consensus_problems, index_images
from llm.model import read_meta
from llm.retrieval import INDEX_FILE
from pipeline import archive_outputs as outputs
from pipeline.archive_caption import CaptionTiles
from pipeline.archive_segment import SegmentTiles
from pipeline.archive_stages import compose_batch, read_batch
from pipeline.layout import read_json
from segcap import atomic
from segcap.cli import COMMAND_ENV, run
from segcap.errors import ConfigError, DataError, SegcapError
from segcap.options import NonNegativeInt, PositiveFloat, PositiveInt, TileOverlap, TileSide, checked
from segcap.progress import Progress
from segmentation.model import read_checkpoint_config, scene_head_folder, weights_digest
from segmentation.provenance import provenance_notice

EXTRAS = ("ray", "rasterio", "geopandas", "pyarrow", "shapely")
FORMAT = "segcap.archive/1"
JOB = "job.json"
SUMMARY = "summary.json"
OWNED = (outputs.PARTS, outputs.TILES, outputs.GEOJSON, outputs.OVERVIEWS, JOB, SUMMARY)  # what --overwrite clears
FLUSH_SECONDS = 60.0  # a part is written at least this often while tiles come in
OBJECT_STORE_MB = 1024  # local Ray's shared object store: a few batches of tiles in flight, not the scene
MAX_ERRORS_LISTED = 20


@checked
def main(
    inputs: list[Path],
    segmentation: Path,
    llm: Path,
    out: Path,
    gsd: PositiveFloat | None = None,
    tile_size: TileSide = 224,
    overlap: TileOverlap = 0.0,
    bands: list[int] | None = None,
    scene_gsd: PositiveFloat | None = None,
    georeference: bool = True,
    address: str | None = None,
    workers: PositiveInt | None = None,
    caption_workers: PositiveInt | None = None,
    threads: PositiveInt = 1,
    batch_size: PositiveInt = 16,
    part_size: PositiveInt = 256,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    scene_head: str | None = "auto",
    num_beams: PositiveInt = 1,
    consensus: int = 0,
    consensus_pool: NonNegativeInt = 0,
    geojson: Literal["auto", "always", "never"] = "auto",
    overview_captions: NonNegativeInt = 6,
    progress: bool = True,
    strict: bool = False,
    overwrite: bool = False,
) -> dict:
    """Caption every tile of GeoTIFF scenes and folders of tiles; write a GeoParquet of footprints and captions.

    Args:
        inputs: GeoTIFF scenes (any GDAL raster) and folders of plain image tiles.
        segmentation: segmentation checkpoint folder (segmentation.train --out).
        llm: caption model folder (llm.finetune --out).
        out: output folder (tiles.parquet, tiles.geojson, overviews/, summary.json; parts/ and job.json to resume).
        gsd: the caption models' ground resolution in metres per pixel; default: the checkpoint's caption_gsd.
        tile_size: tile side in pixels at that resolution (the caption set's image size: 224 for RSICD, 256 for
            UCM-captions); a scene window of tile_size x gsd metres is read and resampled to it.
        overlap: fraction of a tile shared with its neighbours (0 to 0.9).
        bands: the scenes' bands to read, 1-based: 3 (red green blue) or 1 (grey); default: the bands marked red,
            green and blue, else 1 2 3, else 1.
        scene_gsd: the scenes' metres per pixel, for rasters whose transform does not say it (no CRS) or says it
            wrong; default: from each scene's transform and CRS.
        georeference: footprints in the scenes' CRS (a scene without a CRS is refused); --no-georeference accepts
            such scenes, whose tiles then have no footprint.
        address: a running Ray cluster to join (auto, host:6379, ray://host:10001); default: Ray on this machine.
        workers: Ray workers segmenting tiles: segmentation actors, and read and compose tasks at a time (not
            the data-loading processes that --workers means elsewhere, so at least 1); default: one per core of
            this machine, or on a cluster one per GPU (else one per threads + 1 CPUs).
        caption_workers: Ray workers captioning tiles (caption LM actors); default: one per 4 segmentation actors.
        threads: torch CPU threads per model actor (what Ray reserves for each: a number, not torch's default).
        batch_size: tiles per batch through the stages.
        part_size: tiles per part written (a part is also written every minute); what a crash can cost.
        device: where the models run: auto (GPU actors when the Ray cluster has GPUs), cpu or cuda.
        scene_head: scene head folder whose top scenes go into each record (as pipeline.caption); auto: the
            segmentation folder's, when it has one; null: none.
        num_beams: 1 for greedy decoding, more for beam search.
        consensus: N >= 2: the consensus of N beam candidates (as pipeline.caption --consensus).
        consensus_pool: K > 0: the captions of the K closest training images vote too; needs --consensus.
        geojson: write tiles.geojson (EPSG:4326): auto up to 10,000 tiles, always, or never.
        overview_captions: captions drawn on each scene's overview PNG.
        progress: a progress bar (one line in a log).
        strict: stop at the first unreadable tile instead of skipping it.
        overwrite: start again in an --out folder that holds a job with other settings (its outputs are removed).
    """
    t0 = time.perf_counter()
    out = Path(out)

    # 1. check everything before the work: options, models, every input, the output folder
    _require_extras()
    problems = consensus_problems(consensus, consensus_pool,
                                  index_images(llm) if consensus_pool > 0 and Path(llm).is_dir() else None,
                                  str(Path(llm) / INDEX_FILE))
    seg_cfg, model_problems = _model_problems(Path(segmentation), Path(llm), consensus_pool)
    problems += model_problems
    scenes, folders, input_problems, notes = _read_inputs(inputs, bands, georeference, scene_gsd)
    problems += input_problems
    target_gsd = gsd if gsd is not None else (seg_cfg or {}).get("caption_gsd")
    if not problems and target_gsd is None and any(s.gsd for s in scenes):
        problems.append(f"--segmentation {segmentation} does not record the caption set's ground resolution "
                        "(caption_gsd: a checkpoint trained with target_scale); pass --gsd, the metres per pixel "
                        "of the caption set its caption model learnt from (e.g. --gsd 0.5)")
    if problems:
        raise ConfigError(problems)
    settings = _settings(Path(segmentation), seg_cfg, scene_head, Path(llm), target_gsd, tile_size, overlap, bands,
                         scene_gsd, georeference, num_beams, consensus, consensus_pool)
    atomic.check_writable(out, overwrite, "--out folder", folder=True)
    _check_job(out, settings, overwrite)
    table = class_table_from_dict(seg_cfg["classes"], where=Path(segmentation) / "config.yaml")
    notes.append(provenance_notice(segmentation, seg_cfg, [s.path for s in scenes] + [p for f in folders.values()
                                                                                    for p in f]))
    for note in filter(None, notes):  # once the checks have passed: an error is one message
        print(note, file=sys.stderr, flush=True)

    with atomic.folder_lock(out, "--out folder"):
        if overwrite:
            _clear(out)
        if read_json(out / JOB) != settings:
            atomic.write_json(out / JOB, settings)

        # 2. the plan: every tile, less those done before
        plan = _plan(scenes, folders, target_gsd, tile_size, overlap)
        done = outputs.done_keys(out)
        todo = [row for row in plan if row["key"] not in done]
        if done:
            print(f"resuming: {len(plan) - len(todo)} of {len(plan)} tiles were done before", file=sys.stderr,
                  flush=True)

        # 3. read -> segment -> compose -> caption on Ray, parts written as the tiles come
        errors: list[str] = []
        ran = time.perf_counter()
        if todo:
            errors = _run(todo, scenes, out, classes=seg_cfg["classes"],
                          segmentation=str(Path(segmentation).resolve()), llm=str(Path(llm).resolve()),
                          address=address, workers=workers, caption_workers=caption_workers, threads=threads,
                          batch_size=batch_size, part_size=part_size, device=device, scene_head=scene_head,
                          num_beams=num_beams, consensus=consensus, consensus_pool=consensus_pool,
                          progress=progress, strict=strict)
        ran = time.perf_counter() - ran

        # 4. tiles.parquet, tiles.geojson, overviews, summary.json (nothing when nothing changed)
        return _write_outputs(out, plan, scenes, folders, table, settings, target_gsd, geojson, overview_captions,
                              errors, ran_tiles=len(todo), ran_s=ran, total_s=time.perf_counter() - t0)


# ---------------------------------------------------------------- checks
def _require_extras() -> None:
    missing = []
    for name in EXTRAS:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"pipeline.archive needs {', '.join(missing)} (the scale extra): "
                          "pip install -e '.[scale]'  (or pip install 'segcap[scale]')")


def _model_problems(segmentation: Path, llm: Path, consensus_pool: int) -> tuple[dict | None, list[str]]:
    problems, cfg = [], None
    try:
        cfg = read_checkpoint_config(segmentation)
    except SegcapError as e:
        problems.append(f"--segmentation: {e}")
    try:
        read_meta(llm)
    except SegcapError as e:
        problems.append(f"--llm: {e}")
    if consensus_pool and not problems and not (llm / INDEX_FILE).is_file():
        problems.append(f"--consensus-pool needs the training compositions' index ({llm / INDEX_FILE}), which "
                        "llm.finetune saves with every model since 2026-12-01; train the model again")
    return cfg, problems


def _read_inputs(inputs: list[Path], bands, georeference: bool, scene_gsd: float | None
                 ) -> tuple[list[SceneInfo], dict[Path, list[Path]], list[str], list[str]]:
    """Every input checked: scenes' headers (a raster, a CRS, the bands), folders' images. Duplicates once.
    Returns (scenes, folders, problems, notes)."""
    scenes: dict[str, SceneInfo] = {}
    folders: dict[Path, list[Path]] = {}
    problems, notes = [], []
    if not inputs:
        problems.append("give at least one input: GeoTIFF scenes or folders of image tiles")
    for p in map(Path, inputs):
        if p.is_dir():
            images = list_images(p)
            if not images:
                problems.append(f"{p}: a folder with no image files (jpg, png, tif, ...) in it; give a folder of "
                                "tiles, or the scene files themselves")
            folders.setdefault(p.resolve(), images)
        elif not p.exists():
            problems.append(f"input not found: {p}")
        else:
            try:
                info = scene_info(p, bands, georeference, scene_gsd)
            except SegcapError as e:
                problems.append(str(e))
                continue
            if info.gsd is None and scene_gsd is None:
                notes.append(f"note: {p} has no CRS; its pixels are taken to be at the caption models' ground "
                             "resolution (--scene-gsd gives its metres per pixel)")
            scenes.setdefault(info.path, info)
    return list(scenes.values()), folders, problems, notes


def _digest_folder(folder: Path, skip: tuple[str, ...] = ("checkpoints",)) -> str:
    """A digest of a model folder: each file's name and bytes (name, size and time for files over 64 MB)."""
    h = hashlib.blake2b(digest_size=12)
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if not f.is_file() or rel.parts[0] in skip:
            continue
        st = f.stat()
        h.update(f"{rel}|{st.st_size}".encode())
        if st.st_size > 64 * 2**20:
            h.update(str(st.st_mtime_ns).encode())
        else:
            h.update(f.read_bytes())
    return h.hexdigest()


def _settings(segmentation: Path, seg_cfg: dict, scene_head, llm: Path, target_gsd, tile_size, overlap, bands,
              scene_gsd, georeference, num_beams, consensus, consensus_pool) -> dict:
    """What the captions depend on (job.json): a rerun with other settings would mix two jobs."""
    head = scene_head_folder(segmentation, scene_head)
    head_file = head / "scene_head.pt" if head is not None else None
    return {
        "format": FORMAT,
        "segmentation": {"path": str(segmentation.resolve()), "weights": weights_digest(segmentation / "model.pt"),
                         "caption_gsd": seg_cfg.get("caption_gsd")},
        "scene_head": ({"path": str(head.resolve()), "weights": weights_digest(head_file)}
                       if head_file is not None and head_file.is_file() else None),
        "llm": {"path": str(llm.resolve()), "digest": _digest_folder(llm)},
        "gsd": target_gsd, "tile_size": tile_size, "overlap": overlap, "bands": list(bands) if bands else None,
        "scene_gsd": scene_gsd, "georeference": georeference,
        "num_beams": num_beams, "consensus": consensus, "consensus_pool": consensus_pool,
    }


def _check_job(out: Path, settings: dict, overwrite: bool) -> None:
    """Refuse (before the work) an --out folder whose job had other settings, or outputs without a job."""
    if overwrite or not out.is_dir():
        return
    job = out / JOB
    if not job.is_file():
        found = [n for n in OWNED if (out / n).exists()]
        if found:
            raise ConfigError(f"--out {out} holds {', '.join(found)} but no {JOB} (not a pipeline.archive job, or an "
                              "older one); pass --overwrite to replace them, or choose another --out")
        return
    try:
        before = json.loads(job.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = {}
    changed = [k for k in settings if before.get(k) != settings[k]]
    if changed:
        said = "; ".join(f"{k}: {_short(before.get(k))} -> {_short(settings[k])}" for k in changed)
        raise ConfigError(f"--out {out} holds tiles captioned with other settings ({said}); pass --overwrite to "
                          "caption everything again, or choose another --out")


def _short(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def _clear(out: Path) -> None:
    for name in OWNED:
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


# ---------------------------------------------------------------- the plan
def _plan(scenes: list[SceneInfo], folders: dict[Path, list[Path]], target_gsd, tile_size, overlap) -> list[dict]:
    """One row a tile, scenes in order then folders: its key (scene or file digest / tile), where it is read."""
    rows = []
    for info in scenes:
        for t in tile_grid(info, target_gsd or info.gsd or 1.0, tile_size, overlap):
            rows.append({"key": f"{info.id}/{t.name}", "kind": "scene", "source": info.path, "scene": info.id,
                         "tile": t.name, "row": t.row, "col": t.col, "x": t.x, "y": t.y, "w": t.w, "h": t.h,
                         "out_w": t.out_w, "out_h": t.out_h})
    for images in folders.values():
        for p in images:
            p = p.resolve()
            rows.append({"key": f"{scene_id(p)}/{p.name}", "kind": "image", "source": str(p), "scene": "",
                         "tile": p.name, "row": 0, "col": 0, "x": 0, "y": 0, "w": 0, "h": 0, "out_w": 0,
                         "out_h": 0})
    return rows


# ---------------------------------------------------------------- Ray
def _start_ray(address: str | None, logical_cpus: float):
    """Join ``address``, or start Ray on this machine with ``logical_cpus``; returns (ray, temp dir or None,
    whether this call started it). A Ray already initialised in this process (a test, a notebook) is used as is."""
    import ray

    if ray.is_initialized():
        return ray, None, False
    env = {k: v for k, v in {**COMMAND_ENV, **os.environ}.items()
           if k in (*COMMAND_ENV, "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    if address:
        try:
            ray.init(address=address, runtime_env={"env_vars": env}, logging_level=logging.ERROR,
                     log_to_driver=True)
        except ConnectionError as e:
            raise ConfigError(f"--address {address}: cannot join a Ray cluster there ({e}); start one with `ray start "
                              "--head` (and `ray start --address HEAD:6379` on the other nodes), or leave out "
                              "--address to run on this machine") from e
        return ray, None, True
    tmp = tempfile.mkdtemp(prefix="segcap-ray-")
    ray.init(num_cpus=math.ceil(logical_cpus), include_dashboard=False, _temp_dir=tmp, logging_level=logging.ERROR,
             object_store_memory=OBJECT_STORE_MB * 2**20, log_to_driver=True)
    return ray, tmp, True


def _pool_sizes(workers: int | None, caption_workers: int | None, threads: int, cpus: float, gpus: float
                ) -> tuple[int, int]:
    """(segmentation actors, caption actors): ``workers`` or one segmenter per GPU, else per ``threads + 1`` CPUs
    (a CPU between a segmenter's reads and compositions); one captioner per 4 segmenters (on a CPU a caption takes a
    few milliseconds, a segmentation a tenth of a second)."""
    seg = workers or (int(gpus) if gpus >= 1 else max(1, int(cpus // (threads + 1))))
    return seg, caption_workers or math.ceil(seg / 4)


def _run(todo: list[dict], scenes: list[SceneInfo], out: Path, *, classes: dict, segmentation: str, llm: str, address,
         workers, caption_workers, threads: int, batch_size: int, part_size: int, device: str, scene_head,
         num_beams: int, consensus: int, consensus_pool: int, progress: bool, strict: bool) -> list[str]:
    """The Ray Data pipeline over ``todo``; parts written to ``out`` as tiles finish. Returns the unreadable tiles'
    messages (a DataError at the first with ``strict``).

    Locally, Ray gets the logical CPUs the stages ask for: ``threads`` per model actor, half a CPU per read and per
    compose task (as many of each at a time as there are segmenters). Ray Data's defaults retry a task whose worker
    died and restart a dead actor, retrying its batch (``max_restarts`` and ``max_task_retries`` -1)."""
    if address:
        seg_n = cap_n = 0  # from the cluster's resources once joined
        ray, tmp, started = _start_ray(address, 0)
    else:
        seg_n, cap_n = _pool_sizes(workers, caption_workers, threads, os.cpu_count() or 1, 0)
        ray, tmp, started = _start_ray(address, (seg_n + cap_n) * threads + seg_n)
    errors: list[str] = []
    pending: list = []
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
        import ray.data
        from ray.data import ActorPoolStrategy, TaskPoolStrategy

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # ours counts tiles; Ray Data's logs go to the session's log folder
        ctx.print_on_execution_start = False
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        resources = ray.cluster_resources()
        gpus = float(resources.get("GPU", 0)) if device != "cpu" else 0.0
        if device == "cuda" and gpus == 0:
            raise ConfigError("--device cuda: the Ray cluster has no GPU; use --device auto or cpu")
        if not started or address:  # a Ray found running, or a cluster: size the pools by what it has
            seg_n, cap_n = _pool_sizes(workers, caption_workers, threads, float(resources.get("CPU", 1)), gpus)
        model_device = "cuda" if gpus else "cpu"
        per_actor = ({"num_gpus": min(1.0, gpus / (seg_n + cap_n)), "num_cpus": 1} if gpus
                     else {"num_cpus": threads})
        tasks = TaskPoolStrategy(size=seg_n)
        scene_dicts = {s.id: s.as_dict() for s in scenes}

        ds = ray.data.from_items(todo, override_num_blocks=max(1, math.ceil(len(todo) / batch_size)))
        ds = ds.map_batches(read_batch, batch_format="pyarrow", batch_size=batch_size, compute=tasks, num_cpus=0.5,
                            fn_kwargs={"scenes": scene_dicts})
        ds = ds.map_batches(SegmentTiles, batch_format="pyarrow", batch_size=batch_size,
                            compute=ActorPoolStrategy(size=seg_n),
                            fn_constructor_kwargs={"segmentation": segmentation, "scene_head": scene_head,
                                                   "device": model_device, "threads": threads},
                            **per_actor)
        ds = ds.map_batches(compose_batch, batch_format="pyarrow", batch_size=batch_size, compute=tasks, num_cpus=0.5,
                            fn_kwargs={"classes": classes})
        ds = ds.map_batches(CaptionTiles, batch_format="pyarrow", batch_size=batch_size,
                            compute=ActorPoolStrategy(size=cap_n),
                            fn_constructor_kwargs={"llm": llm, "num_beams": num_beams, "consensus": consensus,
                                                   "consensus_pool": consensus_pool, "device": model_device,
                                                   "threads": threads},
                            **per_actor)

        bar = Progress(total=len(todo), desc="archive", unit="tile", enabled=progress)
        flushed = time.monotonic()
        with bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                status = batch.column("status").to_pylist()
                for i, s in enumerate(status):
                    if s == "error":
                        message = batch.column("message")[i].as_py()
                        if strict:
                            raise DataError(f"{message} (--strict: stopped; the tiles done are kept, rerun "
                                            "without --strict to skip such tiles)")
                        errors.append(message)
                        bar.write(f"skipped: {message}")
                done = batch.filter(pc.not_equal(batch.column("status"), "error"))
                if done.num_rows:
                    pending.append(done)
                bar.update(batch.num_rows)
                if sum(t.num_rows for t in pending) >= part_size or time.monotonic() - flushed > FLUSH_SECONDS:
                    outputs.write_part(out, pa.concat_tables(pending))
                    pending, flushed = [], time.monotonic()
    finally:
        if pending:  # whatever stopped the job, the tiles finished so far are kept
            import pyarrow as pa

            outputs.write_part(out, pa.concat_tables(pending))
        if started:
            ray.shutdown()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    return errors


# ---------------------------------------------------------------- outputs
def _write_outputs(out: Path, plan: list[dict], scenes: list[SceneInfo], folders, table, settings: dict,
                   target_gsd, geojson: str, overview_captions: int, errors: list[str], ran_tiles: int,
                   ran_s: float, total_s: float) -> dict:
    keys = [r["key"] for r in plan]
    parts = outputs.part_files(out)
    digest = hashlib.blake2b(json.dumps([settings, [p.name for p in parts], keys, geojson, overview_captions])
                             .encode(), digest_size=12).hexdigest()
    before = read_json(out / SUMMARY)
    if before.get("digest") == digest and (out / outputs.TILES).is_file():
        print(f"{out / outputs.TILES}: nothing new; all {before.get('captioned', 0)} tiles were captioned before",
              flush=True)
        return before
    rows = outputs.read_rows(out, set(keys))
    status = rows.column("status").to_pylist()
    by_scene = {s.id: s for s in scenes}
    models = {"segmentation": settings["segmentation"]["path"], "llm": settings["llm"]["path"]}
    frame = outputs.geo_frame(rows, by_scene, table, keys, models, target_gsd)
    if frame.crs is not None and len({s.crs for s in scenes if s.crs}) > 1:
        print(f"note: the scenes have {len({s.crs for s in scenes if s.crs})} CRSs; tiles.parquet's footprints are "
              "in EPSG:4326 (each tile's own CRS is in its crs column)", file=sys.stderr, flush=True)
    written = {"tiles": str(outputs.write_geoparquet(frame, out / outputs.TILES))}
    want_geojson = geojson == "always" or (geojson == "auto" and len(frame) <= outputs.GEOJSON_AUTO_MAX)
    path = outputs.write_geojson(frame, out / outputs.GEOJSON) if want_geojson else None
    if path is None and (out / outputs.GEOJSON).exists():
        (out / outputs.GEOJSON).unlink()  # from an earlier run: it would no longer match tiles.parquet
    if path is not None:
        written["geojson"] = str(path)
    taken: set[str] = set()
    for info in scenes:
        if (frame["source"] == info.path).any():
            name = outputs.overview_name(info, taken)
            outputs.draw_overview(info, frame, table, out / outputs.OVERVIEWS / name, overview_captions)
            written.setdefault("overviews", []).append(str(out / outputs.OVERVIEWS / name))
    per_key = dict(zip(rows.column("key").to_pylist(), status, strict=True))
    summary = {
        "format": FORMAT, "digest": digest, "tiles": len(plan), "captioned": status.count("ok"),
        "nodata_skipped": status.count("nodata"), "not_done": len(plan) - len(per_key),
        "unreadable_this_run": len(errors), "errors": errors[:MAX_ERRORS_LISTED],
        "this_run": {"tiles": ran_tiles, "pipeline_s": round(ran_s, 2), "total_s": round(total_s, 2),
                     "tiles_per_s": round(ran_tiles / ran_s, 3) if ran_tiles and ran_s else None},
        "scenes": [{"path": s.path, "crs": s.crs, "gsd": s.gsd, "size": [s.width, s.height], "bands": list(s.bands),
                    "tiles": sum(1 for r in plan if r["scene"] == s.id),
                    "nodata_skipped": sum(1 for r in plan if r["scene"] == s.id and per_key.get(r["key"]) == "nodata")}
                   for s in scenes],
        "folders": [{"path": str(f), "tiles": len(images)} for f, images in folders.items()],
        "outputs": written, "settings": settings,
    }
    atomic.write_json(out / SUMMARY, summary)
    print(f"{out / outputs.TILES}: {summary['captioned']} tiles captioned, {summary['nodata_skipped']} all-nodata "
          f"skipped, {len(errors)} unreadable, of {len(plan)} ({len(scenes)} scenes, {len(folders)} folders) in "
          f"{total_s:.1f} s", flush=True)
    return summary


if __name__ == "__main__":

    run(main, positional=("inputs",))
