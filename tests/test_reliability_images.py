"""Reliability (issue 26, items 4 and 7): images read as they are, and pipeline.caption's batch that all failed.

Odd files are written here, as remote-sensing tools write them (rasterio, i.e. GDAL; OpenCV for a 16-bit PNG): a
4-band uint16 TIFF holding 12-bit values (once read as RGB in 0..15, near black), a full-range 16-bit single band, a
2-band TIFF, a 1x1 picture. Each check reads the array's range and the message. pipeline.caption runs on a tiny
random-weight UNet and a one-layer caption LM trained for one epoch on the LLM fixture (a few seconds).
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from aerialdata.classes import load_class_table
from aerialdata.images import image_size, read_rgb, read_rgb_scaled, scale_to_uint8
from llm.finetune import main as finetune
from pipeline import caption as caption_mod
from segcap.cli import run as run_cli
from segcap.errors import ConfigError, DataError
from segmentation.model import CONFIG_FORMAT, build_model

try:
    import rasterio
except ImportError:  # the [scale] extra; the files that need it are refused with a message without it (tested)
    rasterio = None

TESTS = Path(__file__).resolve().parent
DRONE_IMAGE = TESTS / "data" / "drone" / "original_images" / "000.jpg"
LLM_DATA = TESTS / "data" / "llm"
needs_rasterio = pytest.mark.skipif(rasterio is None, reason="rasterio (GDAL) is not installed")


# ---------------------------------------------------------------- files and models
def write_tiff(path: Path, bands: np.ndarray, **options) -> Path:
    """(H, W, C) ``bands`` as a C-band GeoTIFF without georeferencing, as GDAL writes it (``options``: creation
    options such as photometric="RGB")."""
    h, w, c = bands.shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning: these test files have no place on Earth
        with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=c, dtype=bands.dtype.name,
                           **options) as dst:
            dst.write(np.moveaxis(bands, -1, 0))
    return path


def twelve_bit(h: int = 40, w: int = 60) -> np.ndarray:
    """(H, W, 4) uint16 in 0..4095: band 1 rises to the right, band 2 downwards, band 3 the reverse of band 1, band 4
    (near infrared, say) falls downwards; each band is told apart by its gradient."""
    x = np.linspace(0, 4095, w)[None, :].repeat(h, 0)
    y = np.linspace(0, 4095, h)[:, None].repeat(w, 1)
    return np.rint(np.stack([x, y, 4095 - x, 4095 - y], axis=-1)).astype(np.uint16)


def rises_right(channel: np.ndarray) -> bool:
    return bool(np.all(np.diff(channel.astype(int).mean(0)) >= 0) and channel[:, -1].mean() - channel[:, 0].mean() > 200)


def rises_down(channel: np.ndarray) -> bool:
    return bool(np.all(np.diff(channel.astype(int).mean(1)) >= 0) and channel[-1].mean() - channel[0].mean() > 200)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A random-weight small UNet checkpoint and a one-layer caption LM (one epoch on the LLM fixture)."""
    root = tmp_path_factory.mktemp("models")
    seg = root / "seg"
    seg.mkdir()
    table = load_class_table("seed10")
    arch = {"decoder_channels": [16, 8, 8, 8, 8]}
    torch.manual_seed(0)
    torch.save(build_model(arch, table.num_classes).state_dict(), seg / "model.pt")
    (seg / "config.yaml").write_text(yaml.safe_dump({
        "format": CONFIG_FORMAT, "architecture": arch, "classes": table.to_dict(), "input": {"tile_size": 1024},
        "trained_on": [{"source": "loveda", "root": "/data/LoveDA", "gsd": 0.3, "synthetic": False, "images": 4}]}))
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors; the machine is shared
    finetune(out=root / "lm", compositions=LLM_DATA / "compositions.jsonl",
             captions=LLM_DATA / "rsicd" / "dataset_rsicd.json",
             tiny_model={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "num_key_value_heads": 2, "max_position_embeddings": 128},
             tokenizer={"kind": "word", "vocab_size": 200}, epochs=1, batch_size=8, max_length=128,
             save_checkpoints=False, progress=False, threads=1)
    yield {"segmentation": seg, "llm": root / "lm"}
    torch.set_num_threads(before)


def cli(args: list, capsys) -> tuple[int, str, str]:
    """pipeline.caption as its command line in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        run_cli(caption_mod.main, [str(a) for a in args], positional=("images",))
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


# ---------------------------------------------------------------- 16-bit and 12-bit data
@needs_rasterio
@pytest.mark.parametrize("photometric", ["RGB", "MINISBLACK"])  # Pillow: RGB;16 cut to its high byte / cannot open
def test_four_band_12_bit_tiff_reads_its_first_three_bands_at_full_contrast(photometric, tmp_path):
    path = write_tiff(tmp_path / "scene.tif", twelve_bit(), photometric=photometric)
    rgb = read_rgb(path)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    assert rgb.max() >= 250 and rgb.min() <= 5, (rgb.min(), rgb.max())  # 0..15 before: near black
    assert rises_right(rgb[..., 0]) and rises_down(rgb[..., 1]) and rises_right(255 - rgb[..., 2])  # bands 1, 2, 3
    # the 2-98 % cut over the three bands together: the middle value lands in the middle
    assert abs(int(rgb[:, 30, 0].mean()) - 128) <= 8
    assert image_size(path) == (60, 40) and read_rgb_scaled(path, 0.5).shape == (20, 30, 3)


@needs_rasterio
def test_bands_choose_and_order_the_bands_and_one_band_is_grey(tmp_path):
    path = write_tiff(tmp_path / "scene.tif", twelve_bit(), photometric="RGB")
    false_colour = read_rgb(path, bands=[4, 3, 2])  # band 4 (falls downwards) as red
    assert rises_down(255 - false_colour[..., 0]) and rises_right(255 - false_colour[..., 1])
    assert rises_down(false_colour[..., 2])
    grey = read_rgb(path, bands=(2,))
    assert (grey[..., 0] == grey[..., 2]).all() and rises_down(grey[..., 0]) and grey.max() >= 250
    assert read_rgb_scaled(path, 0.5, bands=[4, 3, 2]).shape == (20, 30, 3)


@needs_rasterio
def test_a_band_that_does_not_exist_and_bad_band_numbers_are_named(tmp_path):
    path = write_tiff(tmp_path / "scene.tif", twelve_bit())
    with pytest.raises(DataError, match=r"scene.tif has 4 bands, so band 5 does not exist; choose --bands from 1 to 4"):
        read_rgb(path, bands=[5, 3, 2])
    with pytest.raises(ConfigError, match="band numbers start at 1"):
        read_rgb(path, bands=[0, 1, 2])
    with pytest.raises(ConfigError, match=r"give 3 band numbers \(red green blue"):
        read_rgb(path, bands=[1, 2])
    (tmp_path / "cut.tif").write_bytes(path.read_bytes()[:300])  # an interrupted copy
    with pytest.raises(DataError, match=r"cut.tif: not a readable image \(rasterio: "):
        read_rgb(tmp_path / "cut.tif")


@needs_rasterio
def test_two_band_tiff_needs_bands_and_reads_one_as_grey(tmp_path):
    path = write_tiff(tmp_path / "sar.tif", twelve_bit()[..., :2])
    with pytest.raises(DataError, match=r"sar.tif has 2 bands, and an RGB picture needs 3; .*--bands 1 reads band 1"):
        read_rgb(path)
    with pytest.raises(DataError, match=r"sar.tif has 2 bands, so band 3 does not exist; choose --bands from 1 to 2"):
        read_rgb(path, bands=[1, 2, 3])
    grey = read_rgb(path, bands=[1])
    assert grey.shape == (40, 60, 3) and rises_right(grey[..., 0]) and grey.max() >= 250


def test_16_bit_band_that_uses_its_range_is_scaled_linearly_and_12_bit_is_stretched(tmp_path):
    full = (np.arange(64 * 64, dtype=np.uint64) * 65535 // (64 * 64 - 1)).astype(np.uint16).reshape(64, 64)
    Image.fromarray(full).save(tmp_path / "full.png")  # 16-bit grey PNG (Pillow's I;16)
    Image.fromarray(full).save(tmp_path / "full.tif")
    for name in ("full.png", "full.tif"):
        rgb = read_rgb(tmp_path / name)
        assert rgb.shape == (64, 64, 3) and (rgb[..., 0] == rgb[..., 2]).all()
        # linear from 0..65535, as its 8-bit export would read (not a per-image stretch: 0.5-99.5 % before)
        assert np.array_equal(rgb[..., 0], np.rint(full / 257).astype(np.uint8)), name
    sensor = (full >> 4).astype(np.uint16)  # the same picture in 12 bits, 0..4095
    Image.fromarray(sensor).save(tmp_path / "sensor.png")
    rgb = read_rgb(tmp_path / "sensor.png")
    assert rgb.min() == 0 and rgb.max() == 255 and (rgb[:1] == 0).all() and (rgb[-1:] == 255).all()  # 2-98 % cut
    # a 16-bit RGB PNG (Pillow would keep the high byte: 0..15) reads at full contrast, in RGB order
    bands = np.stack([sensor, sensor.T, 4095 - sensor], axis=-1)
    cv2.imwrite(str(tmp_path / "rgb16.png"), bands[..., ::-1])  # OpenCV writes BGR
    rgb = read_rgb(tmp_path / "rgb16.png")
    assert rgb.max() == 255 and rises_down(rgb[..., 0]) and rises_right(rgb[..., 1]) and rises_down(255 - rgb[..., 2])


def test_scaling_rules_and_8_bit_pictures_unchanged(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    assert scale_to_uint8(a) is a  # 8-bit: kept byte for byte
    reflectance = np.linspace(0, 1, 16 * 16 * 3, dtype=np.float32).reshape(16, 16, 3)
    assert np.array_equal(scale_to_uint8(reflectance), np.rint(reflectance * 255).astype(np.uint8))
    assert scale_to_uint8(np.full((4, 4, 1), 1000, np.uint16)).shape == (4, 4, 1)  # flat: no division by zero
    for mode in ("RGB", "L", "RGBA", "P"):
        im = Image.fromarray(a).convert(mode)
        im.save(tmp_path / f"{mode}.png")
        expected = np.asarray(im.convert("RGB")) if mode != "RGBA" else a
        assert np.array_equal(read_rgb(tmp_path / f"{mode}.png"), expected), mode
    assert np.array_equal(read_rgb(tmp_path / "RGB.png", bands=[1, 2, 3]), a)
    assert np.array_equal(read_rgb(tmp_path / "RGB.png", bands=[3, 2, 1]), a[..., ::-1])


@needs_rasterio
def test_without_rasterio_a_file_pillow_cannot_read_is_refused_with_the_fix(tmp_path, monkeypatch):
    rgb16 = write_tiff(tmp_path / "rgb16.tif", twelve_bit(), photometric="RGB")
    two = write_tiff(tmp_path / "two.tif", twelve_bit()[..., :2])
    monkeypatch.setitem(sys.modules, "rasterio", None)  # import rasterio now raises ImportError
    with pytest.raises(DataError, match=r"rgb16.tif: a TIFF of 4 bands of 16-bit values, which Pillow cannot read "
                                        r"exactly; install rasterio \(pip install rasterio\)"):
        read_rgb(rgb16)
    with pytest.raises(DataError, match=r"two.tif: a TIFF of 2 bands of 16-bit values, which Pillow cannot open; "
                                        r"install rasterio"):
        read_rgb(two)


# ---------------------------------------------------------------- pipeline.caption
@needs_rasterio
def test_caption_reads_the_bands_asked_for(models, tmp_path, capsys):
    scene = write_tiff(tmp_path / "scene.tif", twelve_bit(64, 64), photometric="RGB")
    out = tmp_path / "captions.json"
    code, stdout, err = cli([scene, "--segmentation", models["segmentation"], "--llm", models["llm"],
                             "--bands", "4", "3", "2", "--json", out], capsys)
    assert code == 0 and "note:" not in err, err
    results = json.loads(out.read_text())
    assert len(results) == 1 and results[0]["caption"] and f"{scene}: {results[0]['caption']}" in stdout
    code, _, err = cli([scene, "--segmentation", models["segmentation"], "--llm", models["llm"], "--bands", "5", "3",
                        "2", "--strict"], capsys)
    assert code == 2 and "scene.tif has 4 bands, so band 5 does not exist" in err


def test_caption_notes_a_tiny_image_once(models, tmp_path, capsys):
    Image.new("RGB", (1, 1), (40, 120, 60)).save(tmp_path / "dot.png")
    out = tmp_path / "captions.json"
    code, stdout, err = cli([DRONE_IMAGE, tmp_path / "dot.png", "--segmentation", models["segmentation"], "--llm",
                             models["llm"], "--json", out], capsys)
    assert code == 0, err
    results = json.loads(out.read_text())
    assert [Path(r["image"]).name for r in results] == ["000.jpg", "dot.png"]
    assert results[1]["composition"]["width"] == 1 and all(r["caption"] for r in results)
    assert err.count("note:") == 1 and err.count("dot.png is 1x1 px, smaller than 32 px a side") == 1
    assert "sees mostly padding" in err and "a guess" in err and "the full image" in err
    # a --scale that shrinks an image below 32 px says so, and what to do
    w, h = image_size(DRONE_IMAGE)
    scale = 16 / min(w, h)
    code, _, err = cli([DRONE_IMAGE, "--segmentation", models["segmentation"], "--llm", models["llm"],
                        "--scale", str(scale)], capsys)
    assert code == 0 and err.count("note:") == 1 and f"000.jpg is {w}x{h} px (" in err and "a larger --scale" in err


def test_caption_refuses_bad_bands_before_loading(models, tmp_path, capsys, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model was loaded before the options were checked")
    monkeypatch.setattr(caption_mod, "load_segmenter", boom)
    code, _, err = cli([DRONE_IMAGE, "--segmentation", models["segmentation"], "--llm", models["llm"], "--bands", "0"],
                       capsys)
    assert code == 2 and "--bands 0: band numbers start at 1" in err


def test_caption_exits_2_when_every_image_failed(models, tmp_path, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "half.jpg").write_bytes(DRONE_IMAGE.read_bytes()[:40])
    bad = [tmp_path / "empty.jpg", tmp_path / "notes.png", tmp_path / "half.jpg"]
    code, stdout, err = cli([*bad, "--segmentation", models["segmentation"], "--llm", models["llm"],
                             "--json", tmp_path / "c.json"], capsys)
    assert code == 2 and not stdout and not (tmp_path / "c.json").exists()
    assert err.count("skipped: ") == 3 and all(f"skipped: {p}" in err for p in bad)  # each named
    assert err.count("error: ") == 1 and "error: all 3 images given failed" in err
    # one readable image among them: the batch goes on and exits 0
    code, stdout, err = cli([*bad, DRONE_IMAGE, "--segmentation", models["segmentation"], "--llm", models["llm"]],
                            capsys)
    assert code == 0 and err.count("skipped: ") == 3 and f"{DRONE_IMAGE}: " in stdout


@needs_rasterio
def test_predict_reads_the_bands_asked_for_and_refuses_bad_ones_before_loading(tmp_path, monkeypatch, capsys):
    """segmentation.predict --bands: the images it segments are the bands asked for; a bad choice is refused before
    the model loads (exit 2)."""
    from segcap.cli import run
    from segmentation import predict
    from tests.test_scene import _checkpoint

    ckpt = _checkpoint(tmp_path / "ckpt")
    folder = tmp_path / "imgs"
    folder.mkdir()
    write_tiff(folder / "a.tif", twelve_bit())
    seen = []
    real = predict.ImageFiles.__getitem__
    monkeypatch.setattr(predict.ImageFiles, "__getitem__", lambda self, i: seen.append(r := real(self, i)) or r)
    predict.main(checkpoint=ckpt, images=folder, out=tmp_path / "m", bands=[4, 3, 2], workers=0, progress=False)
    assert (tmp_path / "m" / "a.png").is_file()
    assert (seen[0][1] == read_rgb(folder / "a.tif", bands=[4, 3, 2])).all()
    assert not (seen[0][1] == read_rgb(folder / "a.tif")).all()
    with pytest.raises(SystemExit) as e:
        run(predict.main, ["--checkpoint", str(ckpt), "--images", str(folder), "--out",
                           str(tmp_path / "n"), "--bands", "0", "2", "--no-progress"])
    assert e.value.code == 2 and not (tmp_path / "n").exists() and "--bands" in capsys.readouterr().err
