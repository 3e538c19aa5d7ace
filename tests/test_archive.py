"""pipeline.archive: GeoTIFF scenes and tile folders captioned on Ray Data, GeoParquet out.

Small GeoTIFFs written here (an RGB scene in a projected CRS, a 4-band 16-bit one whose colour bands are out of order,
one with nodata, one without a CRS) and a folder of PNG tiles cut from the first; a tiny untrained segmenter that
records caption_gsd 0.5 and a tiny caption LM trained for a few seconds. One local Ray session (3 logical CPUs) for
the module, two jobs on it: a clean one, compared tile by tile with pipeline.caption on the same tiles; and a resumed
one whose caption actor is killed mid-job, compared with the clean one. Bad input is refused before the work.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest
import rasterio
import ray
import shapely
import torch
import yaml
from PIL import Image
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin

from aerialdata.classes import load_class_table
from aerialdata.raster import read_tile, scene_info, tile_grid, tile_starts
from llm.finetune import main as finetune
from pipeline import archive
from pipeline import caption as one_by_one
from pipeline.archive_outputs import PARTS, class_column
from segcap.cli import run
from segcap.errors import ConfigError
from segmentation.model import CONFIG_FORMAT, build_model

TESTS = Path(__file__).resolve().parent
LLM_DATA = TESTS / "data" / "llm"
UTM = "EPSG:32633"
ORIGIN = (500_000.0, 4_000_000.0)
TILE = 32  # px at the models' 0.5 m
JOB = {"tile_size": TILE, "workers": 1, "batch_size": 2, "part_size": 4, "georeference": False, "progress": False}


# ---------------------------------------------------------------------------------------------------- fixtures
def picture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Green ground with rectangles of other colours: every tile looks different (values 1..255, never nodata 0)."""
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (60, 140, 50)
    for _ in range(h * w // 300):
        y, x = int(rng.integers(0, h - 4)), int(rng.integers(0, w - 4))
        img[y : y + int(rng.integers(3, 14)), x : x + int(rng.integers(3, 14))] = rng.integers(1, 256, 3)
    return img


def write_scene(path: Path, bands: np.ndarray, gsd: float, crs: str | None = UTM, origin=ORIGIN, **profile) -> Path:
    """(B, H, W) bands as a tiled GeoTIFF at ``gsd`` units per pixel from ``origin`` (top left)."""
    count, h, w = bands.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=count, dtype=bands.dtype, crs=crs,
                       transform=from_origin(*origin, gsd, gsd), tiled=True, blockxsize=64, blockysize=64,
                       **profile) as ds:
        ds.write(bands)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("archive")
    rng = np.random.default_rng(0)
    big = picture(rng, 192, 320)  # 6 x 10 tiles
    rgbn = np.concatenate([picture(rng, 96, 128).transpose(2, 0, 1).astype(np.uint16) * 40 + 500,
                           rng.integers(0, 9000, (1, 96, 128)).astype(np.uint16)])  # 0.25 m: 2 x 2 tiles
    nodata = picture(rng, 64, 128).transpose(2, 0, 1).copy()
    nodata[:, :, :48] = 0  # tile column 0 all nodata, column 1 half
    scenes = {
        "big": write_scene(root / "big.tif", big.transpose(2, 0, 1), 0.5),
        "rgbn": write_scene(root / "rgbn.tif", rgbn[[2, 1, 0, 3]], 0.25, photometric="minisblack"),  # B, G, R, NIR
        "nodata": write_scene(root / "nodata.tif", nodata, 0.5, nodata=0),
        "plain": write_scene(root / "plain.tif", picture(rng, 64, 64).transpose(2, 0, 1), 1.0, crs=None),
    }
    with rasterio.open(scenes["rgbn"], "r+") as ds:
        ds.colorinterp = [ColorInterp.blue, ColorInterp.green, ColorInterp.red, ColorInterp.undefined]
    folder = root / "tiles"
    folder.mkdir()
    for c in range(6):  # the first row of big.tif's tiles, as plain PNG tiles
        Image.fromarray(big[:TILE, c * TILE : (c + 1) * TILE]).save(folder / f"tile_{c}.png")

    seg = root / "seg"
    seg.mkdir()
    table = load_class_table("aerial10")
    arch = {"decoder_channels": [16, 8, 8, 8, 8]}
    torch.manual_seed(0)
    torch.save(build_model(arch, table.num_classes).state_dict(), seg / "model.pt")
    (seg / "config.yaml").write_text(yaml.safe_dump({
        "format": CONFIG_FORMAT, "architecture": arch, "classes": table.to_dict(), "caption_gsd": 0.5,
        "trained_on": [{"source": "drone", "root": "x", "gsd": 0.25, "synthetic": False, "images": 4}]}))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared machine: one thread is faster (the actors run one each too)
    finetune(out=root / "lm", compositions=LLM_DATA / "compositions.jsonl",
             captions=LLM_DATA / "rsicd" / "dataset_rsicd.json",
             tiny_model={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "num_key_value_heads": 2, "max_position_embeddings": 128},
             tokenizer={"kind": "word", "vocab_size": 200}, epochs=20, learning_rate=0.01, batch_size=8,
             max_length=128, save_checkpoints=False, progress=False, threads=1)
    yield {"root": root, "big": big, "scenes": scenes, "folder": folder, "segmentation": seg, "llm": root / "lm",
           "inputs": [*scenes.values(), folder]}
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray for the module's jobs (pipeline.archive uses a Ray it finds initialised, and leaves it)."""
    tmp = tempfile.mkdtemp(prefix="segcap-ray-test-")
    ray.init(num_cpus=3, include_dashboard=False, _temp_dir=tmp, object_store_memory=256 * 2**20,
             logging_level=logging.WARNING)
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def clean(data, ray_session) -> dict:
    """A clean job over every input."""
    out = data["root"] / "clean"
    t0 = time.perf_counter()
    summary = archive.main(inputs=data["inputs"], segmentation=data["segmentation"], llm=data["llm"], out=out, **JOB)
    return {"out": out, "summary": summary, "seconds": time.perf_counter() - t0}


def tiles(out: Path):
    return gpd.read_parquet(out / "tiles.parquet")


# ---------------------------------------------------------------------------------------------------- no Ray
def test_scene_header_tiles_and_windowed_reads(data, tmp_path):
    big = scene_info(data["scenes"]["big"])
    assert (big.width, big.height, big.bands, big.crs, big.gsd, big.stretch) == (320, 192, (1, 2, 3), UTM, 0.5, None)
    grid = tile_grid(big, 0.5, TILE)
    assert len(grid) == 60 and (grid[12].row, grid[12].col, grid[12].x, grid[12].y) == (1, 2, 64, 32)
    rgb, valid = read_tile(big, grid[12])
    assert np.array_equal(rgb, data["big"][32:64, 64:96]) and valid.all()

    rgbn = scene_info(data["scenes"]["rgbn"])  # colour bands found by their interpretation, 16 bits stretched
    assert rgbn.bands == (3, 2, 1) and rgbn.count == 4 and rgbn.gsd == 0.25 and rgbn.stretch[0] < rgbn.stretch[1]
    grid = tile_grid(rgbn, 0.5, TILE)  # 64 px windows of the 0.25 m scene, read at 32 px
    assert [(t.x, t.y, t.w, t.out_w) for t in grid] == [(0, 0, 64, 32), (64, 0, 64, 32), (0, 32, 64, 32),
                                                        (64, 32, 64, 32)]
    assert read_tile(rgbn, grid[0])[0].shape == (32, 32, 3)

    nodata = scene_info(data["scenes"]["nodata"])
    grid = tile_grid(nodata, 0.5, TILE)
    assert not read_tile(nodata, grid[0])[1].any()  # all nodata
    rgb, valid = read_tile(nodata, grid[1])
    assert valid[:, :16].sum() == 0 and valid[:, 16:].all() and (rgb[:, :16] == 0).all()

    assert tile_starts(100, 32, 24) == [0, 24, 48, 68]  # overlap 0.25; the last tile ends at the edge
    assert tile_starts(20, 32, 32) == [0]
    assert [t.out_w for t in tile_grid(scene_info(data["scenes"]["big"], scene_gsd=1.0), 0.5, TILE)][:1] == [TILE]

    geographic = write_scene(tmp_path / "wgs84.tif", data["big"][:32, :32].transpose(2, 0, 1), 0.5 / 111_320,
                             crs="EPSG:4326", origin=(15.0, 60.0))
    assert scene_info(geographic).gsd == pytest.approx(0.5 * (0.5 + 110_574 / 111_320) / 2, rel=0.01)  # at 60 deg N


# ---------------------------------------------------------------------------------------------------- bad input
def refused(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        run(archive.main, args=args, positional=("inputs",))
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: "), err
    return err


def test_bad_input_is_one_message_and_exit_2_before_the_work(data, tmp_path, capsys, monkeypatch):
    models = ["--segmentation", str(data["segmentation"]), "--llm", str(data["llm"])]
    out = tmp_path / "out"
    text = tmp_path / "notes.tif"
    text.write_text("not a raster")
    assert "not a raster GDAL can read" in refused([str(text), *models, "--out", str(out)], capsys)
    err = refused([str(data["scenes"]["plain"]), *models, "--out", str(out)], capsys)
    assert "has no CRS" in err and "--no-georeference" in err
    err = refused([str(data["scenes"]["big"]), *models, "--out", str(out), "--bands", "1", "2", "5"], capsys)
    assert "has 3 bands (1..3), so band 5 does not exist" in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "is a file, not a folder" in refused([str(data["scenes"]["big"]), *models, "--out", str(blocker)], capsys)
    err = refused([str(tmp_path / "none.tif"), *models, "--out", str(out), "--overlap", "1.5", "--tile-size", "4"],
                  capsys)  # the options' bounds first, together
    assert err.startswith("error: 2 problems") and "input not found" not in err
    assert "--overlap '1.5' is invalid; expected a number in [0, 0.9] (default: 0.0)" in err
    assert "--tile-size '4' is invalid; expected an integer >= 8 (default: 224)" in err
    err = refused([str(tmp_path / "none.tif"), *models, "--out", str(out), "--consensus-pool", "2"], capsys)
    assert "input not found" in err and "--consensus-pool 2 needs --consensus" in err  # then the rest, together
    with pytest.raises(ConfigError, match=r"pipeline.archive: workers 0 is invalid; expected an integer >= 1 or null"):
        archive.main(inputs=[data["scenes"]["big"]], segmentation=data["segmentation"], llm=data["llm"], out=out,
                     workers=0)  # a direct call is checked alike
    monkeypatch.setitem(sys.modules, "ray", None)  # the scale extra not installed
    assert "pip install -e '.[scale]'" in refused([str(data["scenes"]["big"]), *models, "--out", str(out)], capsys)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------- the jobs
def test_same_captions_as_pipeline_caption(data, clean, tmp_path):
    """Every captioned tile through pipeline.caption, one image at a time: the same record and caption."""
    frame = tiles(clean["out"])
    pngs = {}
    for name in ("big", "rgbn", "nodata"):
        info = scene_info(data["scenes"][name])
        for t in tile_grid(info, 0.5, TILE):
            rgb, valid = read_tile(info, t)
            if not valid.all():  # nodata pixels are unlabeled in the archive's masks: pipeline.caption cannot know
                continue
            if name == "big":  # the scene's own pixels, not the reader's
                assert np.array_equal(rgb, data["big"][t.y : t.y + TILE, t.x : t.x + TILE])
            pngs[(str(info.path), t.name)] = tmp_path / f"{name}_{t.name}.png"
            Image.fromarray(rgb).save(pngs[(str(info.path), t.name)])
    for p in sorted(data["folder"].iterdir()):
        pngs[(str(p.resolve()), p.name)] = p
    results = one_by_one.main(images=list(pngs.values()), segmentation=data["segmentation"], llm=data["llm"])
    expected = {k: r for k, r in zip(pngs, results, strict=True)}
    got = {(r.source, r.tile): r for r in frame.itertuples()}
    assert set(expected) <= set(got) and len(expected) == 60 + 4 + 4 + 6
    for k, r in expected.items():
        assert got[k].caption == r["caption"], k
        record = json.loads(got[k].composition)
        assert {**record, "image": None} == {**r["composition"], "image": None}, k
    # the comparison means something: varied records, more than one caption
    assert len({json.dumps(r["composition"]["classes"]) for r in results}) > 50
    assert len({r["caption"] for r in results}) > 1


def test_geoparquet_and_geojson_open_in_geopandas(data, clean):
    summary, out = clean["summary"], clean["out"]
    assert summary["tiles"] == 60 + 4 + 8 + 4 + 6 and summary["nodata_skipped"] == 2
    assert summary["captioned"] == summary["tiles"] - 2 and summary["not_done"] == 0
    frame = tiles(out)
    assert len(frame) == summary["captioned"] and frame.crs == UTM and frame["caption"].str.len().min() > 0
    big = frame[frame["scene"] == "big.tif"].set_index("tile")
    assert big.loc["r0001_c0002"].geometry.equals(shapely.box(ORIGIN[0] + 32, ORIGIN[1] - 32, ORIGIN[0] + 48,
                                                               ORIGIN[1] - 16))
    assert (big["crs"] == UTM).all() and (big["gsd"] == 0.5).all() and list(big.index[:2]) == ["r0000_c0000",
                                                                                                 "r0000_c0001"]
    rgbn = frame[frame["scene"] == "rgbn.tif"]
    assert (rgbn["width"] == 64).all() and (rgbn["tile_width"] == TILE).all()  # 64 px of 0.25 m, read at 0.5 m
    assert rgbn.geometry.iloc[0].equals(shapely.box(ORIGIN[0], ORIGIN[1] - 16, ORIGIN[0] + 16, ORIGIN[1]))
    partial = frame[(frame["scene"] == "nodata.tif") & (frame["nodata_percent"] > 0)]
    assert len(partial) == 2 and np.allclose(partial["nodata_percent"], 50.0)
    assert (partial["pct_unlabeled"] >= 50.0).all()  # nodata pixels are unlabeled
    unlocated = frame[frame.geometry.isna()]
    assert set(unlocated["scene"]) == {"plain.tif", "tiles"} and unlocated["crs"].isna().all()
    pct = frame[[class_column(n) for n in load_class_table("aerial10").names]]
    assert np.allclose(pct.sum(axis=1), 100, atol=1.0)
    assert (frame["dominant_percent"] == pct.max(axis=1)).all()
    assert json.loads(frame["composition"].iloc[0])["schema"].startswith("segcap.composition/")
    assert frame["llm"].iloc[0] == str(data["llm"].resolve())

    located = gpd.read_file(out / "tiles.geojson")
    assert located.crs == "EPSG:4326" and len(located) == len(frame) - len(unlocated)
    assert located.geometry.iloc[0].bounds[0] == pytest.approx(15.0, abs=1e-3)  # UTM 33N's central meridian
    assert {p.name for p in (out / "overviews").iterdir()} == {"big.png", "rgbn.png", "nodata.png", "plain.png"}
    with Image.open(out / "overviews" / "big.png") as im:
        assert im.size[0] > 500


def test_a_second_run_writes_nothing(data, clean, monkeypatch):
    out = clean["out"]
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    monkeypatch.setattr(archive, "_start_ray", lambda *a: pytest.fail("a rerun with nothing to do started Ray"))
    summary = archive.main(inputs=data["inputs"], segmentation=data["segmentation"], llm=data["llm"], out=out, **JOB)
    assert summary["digest"] == clean["summary"]["digest"]
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


def test_other_settings_are_refused_without_overwrite(data, clean, capsys):
    err = refused([*map(str, data["inputs"]), "--segmentation", str(data["segmentation"]), "--llm", str(data["llm"]),
                   "--out", str(clean["out"]), "--tile-size", "48", "--no-georeference"], capsys)
    assert "holds tiles captioned with other settings (tile_size: 32 -> 48)" in err and "--overwrite" in err


def _caption_actors() -> list[psutil.Process]:
    found = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "CaptionTiles" in " ".join(p.cmdline()):
                found.append(p)
        except psutil.Error:
            continue
    return found


def test_resumed_job_survives_a_killed_worker(data, clean):
    """A copy of the clean job's folder with most parts removed: the rerun does only those tiles, its caption actor is
    killed once the first new part is written, Ray restarts it, and the outputs equal the clean job's."""
    out = data["root"] / "killed"
    shutil.copytree(clean["out"], out)
    kept = sorted((out / PARTS).iterdir())[:2]
    for p in sorted((out / PARTS).iterdir())[2:]:
        p.unlink()
    done_before = sum(pq.read_metadata(p).num_rows for p in kept)
    result: dict = {}

    def job():
        try:
            result["summary"] = archive.main(inputs=data["inputs"], segmentation=data["segmentation"],
                                             llm=data["llm"], out=out, **JOB)
        except BaseException as e:  # noqa: BLE001 - reported by the test below
            result["error"] = e

    thread = threading.Thread(target=job)
    thread.start()
    killed, rows_at_kill = None, None
    deadline = time.monotonic() + 240
    while thread.is_alive() and time.monotonic() < deadline:
        new = [p for p in (out / PARTS).iterdir() if p not in kept and p.suffix == ".parquet"]
        actors = _caption_actors()
        if new and actors:
            rows_at_kill = done_before + sum(pq.read_metadata(p).num_rows for p in new)
            killed = actors[0]
            killed.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    thread.join(timeout=300)
    assert "error" not in result, result.get("error")
    assert killed is not None and not killed.is_running(), "no caption actor was killed mid-job"
    assert rows_at_kill < clean["summary"]["tiles"], "the job had finished before the kill"
    summary = result["summary"]
    assert summary["captioned"] == clean["summary"]["captioned"] and summary["this_run"]["tiles"] == (
        clean["summary"]["tiles"] - done_before)
    a, b = tiles(clean["out"]), tiles(out)
    assert a.drop(columns="geometry").equals(b.drop(columns="geometry")) and a.geometry.equals(b.geometry)
