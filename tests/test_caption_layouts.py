"""Caption sets in the layouts users download them in (RSICD, UCM-captions, Sydney-captions), read with no options,
and ``python -m aerialdata.prepare`` that joins UC Merced's class folders with UCM-captions' ``N.tif`` names.

Tests that need the real UCM samples (``../shared/real-samples/ucm``: 1.tif..9.tif, pixel-identical to UC Merced's
agricultural01..09.tif) skip where that folder is absent (a clean clone); the rest build tiny sets in ``tmp_path``.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aerialdata.captionset import (
    KNOWN_GSD,
    UCM_CLASSES,
    CaptionDataset,
    CaptionImage,
    dataset_key,
    ucm_category,
    ucm_source,
)
from aerialdata.prepare import main as prepare
from segcap.cli import run
from segcap.errors import ConfigError, DataError, DatasetNotFoundError
from tests.conftest import SHARED

UCM_SAMPLES = SHARED / "real-samples" / "ucm"


@pytest.fixture
def ucm_samples() -> Path:
    if not (UCM_SAMPLES / "UCM_images").is_dir():
        pytest.skip("needs ../shared/real-samples/ucm (not in a clean clone)")
    return UCM_SAMPLES


def _captions(path: Path, filenames: list[str], dataset: str = "ucm", splits=("train", "val", "test")) -> Path:
    """A Karpathy caption JSON for ``filenames`` (one caption each, splits in turn)."""
    images = [{"filename": fn, "imgid": i, "split": splits[i % len(splits)], "sentids": [i],
               "sentences": [{"raw": f"a photo {fn} .", "tokens": ["a", "photo", fn], "imgid": i, "sentid": i}]}
              for i, fn in enumerate(filenames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "dataset": dataset}))
    return path


def _tiny_tif(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _run_prepare(args: list[str], capsys) -> tuple[int, str]:
    """Run the command line; (exit code, stderr)."""
    code = 0
    try:
        run(prepare, [*args, "--no-progress"], positional=("dataset",))
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ the N -> class map
def test_ucm_mapping_follows_sources_md():
    assert len(UCM_CLASSES) == 21 and list(UCM_CLASSES) == sorted(UCM_CLASSES)
    assert ucm_source(1) == ("agricultural", 1) and ucm_source(9) == ("agricultural", 9)
    assert ucm_source(100) == ("agricultural", 0)
    assert ucm_source(101) == ("airplane", 0) and ucm_source(102) == ("airplane", 1)
    assert ucm_source(1901) == ("storagetanks", 0) and ucm_source(2100) == ("tenniscourt", 99)
    # every photo of every class exactly once
    assert len({ucm_source(n) for n in range(1, 2101)}) == 2100
    assert ucm_category("81.tif") == "agricultural" and ucm_category("2101.tif") is None
    assert ucm_category("river_3.jpg") is None
    assert dataset_key("UCM") == dataset_key("ucm-captions") == "ucm" and dataset_key("Sydney") == "sydney"
    assert KNOWN_GSD == {"ucm": 0.3, "sydney": 0.5}


# ------------------------------------------------------------------------------------------------ layouts, no options
def test_real_ucm_samples_read_with_no_options(ucm_samples):
    ds = CaptionDataset(ucm_samples)
    assert (ds.json_name, ds.images_dir) == ("dataset_ucm.json", "UCM_images")
    assert len(ds) == 9 and ds.known_gsd == 0.3
    assert set(ds.categories().values()) == {"agricultural"}
    assert all(ds.image_path(it.filename).is_file() for it in ds)
    item = ds[0]
    assert isinstance(item, CaptionImage) and item.filename == "1.tif" and item.split == "train"
    assert len(item.sentences) == 5 and all(isinstance(s, str) and s for s in item.sentences)
    assert [it.filename for it in CaptionDataset(ucm_samples, split="test")] == ["8.tif", "9.tif"]
    # the class attributes keep the RSICD defaults
    assert (CaptionDataset.json_name, CaptionDataset.images_dir) == ("dataset_rsicd.json", "RSICD_images")


def test_published_layout_imgs_and_dataset_json(tmp_path):
    root = tmp_path / "UCM_captions"
    names = ["1.tif", "101.tif", "2100.tif"]
    for i, fn in enumerate(names):
        _tiny_tif(root / "imgs" / fn, i)
    _captions(root / "dataset.json", names, dataset="UCM")
    ds = CaptionDataset(root)
    assert (ds.json_name, ds.images_dir) == ("dataset.json", "imgs")
    assert ds.categories() == {"1.tif": "agricultural", "101.tif": "airplane", "2100.tif": "tenniscourt"}
    assert ds.image_path("101.tif") == root / "imgs" / "101.tif" and ds.known_gsd == 0.3
    # a class folder still wins over the N -> class map
    (root / "txtclasses_ucm").mkdir()
    (root / "txtclasses_ucm" / "Beach.txt").write_text("101.tif\n")
    assert CaptionDataset(root).get("101.tif").category == "beach"
    # the JSON given itself: the images folder is still found
    assert CaptionDataset(root / "dataset.json").image_path("1.tif").is_file()


def test_sydney_categories_are_not_guessed(tmp_path):
    root = tmp_path / "Sydney_captions"
    _tiny_tif(root / "imgs" / "1.tif", 0)
    _captions(root / "dataset.json", ["1.tif", "2.tif"], dataset="sydney")
    ds = CaptionDataset(root)
    assert set(ds.categories().values()) == {"unknown"} and ds.known_gsd == 0.5
    (root / "txtclasses_sydney").mkdir()
    (root / "txtclasses_sydney" / "residential.txt").write_text("2.tif\n")
    assert CaptionDataset(root).categories() == {"1.tif": "unknown", "2.tif": "residential"}


def test_rsicd_layout_wins_and_has_no_gsd(tmp_path):
    root = tmp_path / "RSICD"
    _captions(root / "dataset_rsicd.json", ["pond_1.jpg"], dataset="rsicd")
    _captions(root / "dataset_other.json", ["x_1.jpg"], dataset="other")  # dataset_rsicd.json is taken first
    (root / "RSICD_images").mkdir()
    (root / "images").mkdir()
    ds = CaptionDataset(root)
    assert (ds.json_name, ds.images_dir, ds.known_gsd) == ("dataset_rsicd.json", "RSICD_images", None)
    assert ds.categories() == {"pond_1.jpg": "pond"}


def test_two_caption_files_is_a_clear_error(tmp_path):
    _captions(tmp_path / "dataset_ucm.json", ["1.tif"])
    _captions(tmp_path / "dataset_sydney.json", ["1.tif"], dataset="sydney")
    with pytest.raises(DataError, match=r"2 caption files \(dataset_sydney.json, dataset_ucm.json\).*json_name"):
        CaptionDataset(tmp_path)
    assert CaptionDataset(tmp_path, json_name="dataset_sydney.json").known_gsd == 0.5


def test_reader_checklist_missing_root_corrupt_bad_split(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="caption JSON"):
        CaptionDataset(tmp_path / "missing")
    with pytest.raises(DatasetNotFoundError, match="dataset_rsicd.json"):  # a root with no caption file
        CaptionDataset(tmp_path)
    _captions(tmp_path / "dataset.json", ["1.tif", "2.tif", "3.tif"])
    with pytest.raises(ConfigError, match="unknown split"):
        CaptionDataset(tmp_path, split="dev")
    assert len(CaptionDataset(tmp_path, split="val")) == 1
    (tmp_path / "dataset.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        CaptionDataset(tmp_path)


# ------------------------------------------------------------------------------------------------ aerialdata.prepare
@pytest.fixture
def class_tree(tmp_path, ucm_samples) -> tuple[Path, Path, list[str]]:
    """A UC Merced class-folder tree (9 real agricultural photos, 3 tiny airplanes) and a caption JSON over them."""
    images = tmp_path / "UCMerced_LandUse" / "Images"
    for n in range(1, 10):
        (images / "agricultural").mkdir(parents=True, exist_ok=True)
        shutil.copy(ucm_samples / "UCM_images" / f"{n}.tif", images / "agricultural" / f"agricultural{n:02d}.tif")
    for k in range(3):
        _tiny_tif(images / "airplane" / f"airplane{k:02d}.tif", 40 + k)
    names = [f"{n}.tif" for n in range(1, 10)] + ["101.tif", "102.tif", "103.tif"]
    return images, _captions(tmp_path / "captions" / "dataset.json", names, dataset="UCM"), names


def test_prepare_ucm_from_class_folders_round_trips(tmp_path, class_tree, ucm_samples, capsys):
    images, captions, names = class_tree
    out = tmp_path / "ucm"
    code, err = _run_prepare(["ucm", "--images", str(images.parent), "--captions", str(captions),
                              "--out", str(out)], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["dataset_ucm.json", "imgs", "txtclasses_ucm"]
    assert sorted(p.name for p in (out / "imgs").iterdir()) == sorted(names)
    for n in range(1, 10):  # the mapping round-trips: N.tif is the sample N.tif, pixel for pixel
        assert np.array_equal(_pixels(out / "imgs" / f"{n}.tif"), _pixels(ucm_samples / "UCM_images" / f"{n}.tif"))
    assert np.array_equal(_pixels(out / "imgs" / "102.tif"), _pixels(images / "airplane" / "airplane01.tif"))
    assert (out / "dataset_ucm.json").read_bytes() == captions.read_bytes()
    assert (out / "txtclasses_ucm" / "airplane.txt").read_text() == "101.tif\n102.tif\n103.tif\n"
    ds = CaptionDataset(out)
    assert (ds.images_dir, ds.classes_dir, ds.known_gsd) == ("imgs", "txtclasses_ucm", 0.3)
    assert ds.get("103.tif").category == "airplane" and ds.get("9.tif").category == "agricultural"
    assert all(ds.image_path(fn).is_file() for fn in names)

    # the published layout (a folder of N.tif) as --images: copied, JSON and class lists written the same way
    again = tmp_path / "ucm_again"
    code, err = _run_prepare(["ucm", "--images", str(out / "imgs"), "--captions", str(out / "dataset_ucm.json"),
                              "--out", str(again), "--link", "copy"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (again / "imgs").iterdir()) == sorted(names)
    assert not (again / "imgs" / "1.tif").samefile(out / "imgs" / "1.tif")
    assert CaptionDataset(again).categories() == ds.categories()


def test_prepare_refuses_missing_images_and_writes_nothing(tmp_path, class_tree, capsys):
    images, captions, names = class_tree
    (images / "agricultural" / "agricultural05.tif").unlink()
    (images / "airplane" / "airplane02.tif").unlink()
    out = tmp_path / "ucm"
    code, err = _run_prepare(["ucm", "--images", str(images), "--captions", str(captions), "--out", str(out)], capsys)
    assert code == 2
    assert err.count("error:") == 1 and "2 of the 12 images" in err
    assert "5.tif (agricultural/agricultural05.tif)" in err and "103.tif (airplane/airplane02.tif)" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["UCMerced_LandUse", "captions"]


def test_prepare_keeps_an_existing_output(tmp_path, class_tree, capsys):
    images, captions, _ = class_tree
    out = tmp_path / "ucm"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    args = ["ucm", "--images", str(images), "--captions", str(captions), "--out", str(out)]
    code, err = _run_prepare(args, capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    code, err = _run_prepare([*args, "--overwrite"], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["dataset_ucm.json", "imgs", "txtclasses_ucm"]


def test_prepare_sydney_and_option_checks(tmp_path, capsys):
    src = tmp_path / "Sydney_captions"
    for n in (1, 2, 3):
        _tiny_tif(src / "imgs" / f"{n}.tif", n)
    captions = _captions(src / "dataset.json", ["1.tif", "2.tif", "3.tif"], dataset="sydney")
    classes = tmp_path / "classes"
    classes.mkdir()
    (classes / "ocean.txt").write_text("1.tif\n3.tif\n")
    out = tmp_path / "sydney"
    code, err = _run_prepare(["sydney", "--images", str(src), "--captions", str(captions), "--out", str(out),
                              "--classes", str(classes), "--link", "symlink"], capsys)
    assert code == 0, err
    assert (out / "imgs" / "2.tif").is_symlink() and (out / "dataset_sydney.json").is_file()
    ds = CaptionDataset(out)
    assert ds.categories() == {"1.tif": "ocean", "2.tif": "unknown", "3.tif": "ocean"} and ds.known_gsd == 0.5

    # every problem with the options together; a UCM run on a Sydney caption file
    code, err = _run_prepare(["ucm", "--images", str(tmp_path / "nope"), "--captions", str(tmp_path / "nope.json"),
                              "--out", str(tmp_path / "o"), "--classes", str(classes)], capsys)
    assert code == 2 and "3 problems" in err and "--classes is for sydney" in err
    code, err = _run_prepare(["ucm", "--images", str(src), "--captions", str(captions),
                              "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "prepare sydney" in err and not (tmp_path / "o").exists()
