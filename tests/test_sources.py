"""Labelled segmentation sources: the reader checklist (item, length, missing root, corrupt file, bad class id, mask size
mismatch, bad split) for LoveDA, OpenEarthMap and the folder reader on tiny fixtures in their real layouts; class maps;
ground resolution and the synthetic marker; the drone reader as a source; and the real sample files in
../shared/real-samples (skipped when that folder is absent)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aerialdata.captionset import CaptionDataset
from aerialdata.classes import load_class_table
from aerialdata.drone import DroneDataset
from aerialdata.folder import FolderSource, FolderSourceNotFoundError
from aerialdata.images import read_mask, read_rgb
from aerialdata.loveda import LoveDA, LoveDANotFoundError
from aerialdata.openearthmap import OpenEarthMap, OpenEarthMapNotFoundError
from aerialdata.sources import (
    CLASS_MAP_DIR,
    IGNORE,
    SOURCE_KINDS,
    SYNTHETIC_MARKER,
    LabelledSource,
    SourceKind,
    SourceSpec,
    load_class_map,
    open_source,
)
from segcap.errors import ConfigError, DataError, DatasetNotFoundError

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "real-samples"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason="the real samples live in ../shared/real-samples beside the checkout")

FOLDER_MAP = DATA / "folder" / "classes.yaml"
KINDS = ["loveda", "openearthmap", "folder"]
# per fixture: number of labelled items, (width, height), one item's image and mask (relative to the root)
FIXTURES = {
    "loveda": (5, (32, 32), "Train/Rural/images_png/0.png", "Train/Rural/masks_png/0.png"),
    "openearthmap": (4, (32, 32), "aachen/images/aachen_1.tif", "aachen/labels/aachen_1.tif"),
    "folder": (3, (32, 24), "images/a.jpg", "masks/a.png"),
}
NOT_FOUND = {"loveda": LoveDANotFoundError, "openearthmap": OpenEarthMapNotFoundError, "folder": FolderSourceNotFoundError}


def spec(kind: str, root: Path, **kw) -> SourceSpec:
    if kind == "folder":
        kw.setdefault("class_map", FOLDER_MAP)
        kw.setdefault("gsd", 0.5)
    return SourceSpec(kind, root, **kw)


def open_fixture(kind: str, root: Path | None = None, table="aerial10", **kw):
    return open_source(spec(kind, root or DATA / kind, **kw), table)


@pytest.fixture
def copy(tmp_path):
    """A writable copy of a fixture: copy(kind) -> its root."""

    def make(kind: str) -> Path:
        root = tmp_path / kind
        shutil.copytree(DATA / kind, root, ignore=shutil.ignore_patterns("data.py", "__pycache__"))
        return root

    return make


def first_index_of(ds, image_rel: str, root: Path) -> int:
    return ds.image_paths.index(root / image_rel)


# ---------------------------------------------------------------------------------------------------- checklist
@pytest.mark.parametrize("kind", KINDS)
def test_item_and_length(kind):
    n, (w, h), image_rel, _ = FIXTURES[kind]
    ds = open_fixture(kind)
    assert isinstance(ds, LabelledSource) and ds.name == kind and not ds.synthetic
    assert len(ds) == n == len(ds.stems) == len(ds.image_paths) == len(ds.mask_paths) == len(set(ds.stems))
    i = first_index_of(ds, image_rel, DATA / kind)
    image, mask = ds.load(i)
    assert image.shape == (h, w, 3) and image.dtype == np.uint8
    assert mask.shape == (h, w) and mask.dtype == np.uint8
    assert ds.size(i) == (w, h)
    assert set(np.unique(mask)) <= set(ds.provides) | {IGNORE}
    assert IGNORE in mask and len(set(np.unique(mask)) - {IGNORE}) >= 3
    small, small_mask = ds.load(i, scale=0.5)
    assert small.shape == (h // 2, w // 2, 3) and small_mask.shape == (h // 2, w // 2)
    assert set(np.unique(small_mask)) <= set(np.unique(mask))  # nearest neighbour: ids stay ids
    with pytest.raises(IndexError):
        ds.load(n)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("table", ["seed10", "aerial10"])
def test_mask_values_follow_the_class_map(kind, table):
    _, _, image_rel, mask_rel = FIXTURES[kind]
    ds = open_fixture(kind, table=table)
    cmap = load_class_map(FOLDER_MAP if kind == "folder" else None, table, kind=kind)
    names = load_class_table(table).names
    source = read_mask(DATA / kind / mask_rel)
    _, mask = ds.load(first_index_of(ds, image_rel, DATA / kind))
    for sid in np.unique(source):
        target = cmap.targets[int(sid)]
        assert (mask[source == sid] == target).all()
    # spot checks by name, so that a map pointing at the wrong group fails here
    expected = {"loveda": {0: None, 1: None, 2: "building", 3: "artificial surface", 4: "water", 5: "natural surface",
                           6: "vegetation", 7: "vegetation"},
                "openearthmap": {0: None, 1: "natural surface", 2: "vegetation", 3: "artificial surface",
                                 4: "artificial surface", 5: "vegetation", 6: "water", 7: "vegetation", 8: "building"},
                "folder": {0: None, 1: "vegetation", 2: "building", 3: "water"}}[kind]
    for sid, group in expected.items():
        assert cmap.targets[sid] == (IGNORE if group is None else names.index(group))


@pytest.mark.parametrize("kind", KINDS)
def test_missing_root(kind, tmp_path):
    with pytest.raises(NOT_FOUND[kind]) as e:
        open_fixture(kind, tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "Expected" in msg
    assert isinstance(e.value, DatasetNotFoundError) and e.value.exit_code == 2
    if kind != "folder":
        assert "zenodo.org/records/" in msg  # where to download


@pytest.mark.parametrize("kind, folder", [("loveda", "Val/Urban/masks_png"), ("openearthmap", None),
                                          ("folder", "masks")])
def test_missing_folder(kind, folder, copy):
    root = copy(kind)
    if folder is None:  # OpenEarthMap: no region with labels/
        for labels in root.glob("*/labels"):
            shutil.rmtree(labels)
        folder = "<region>/labels"
    else:
        shutil.rmtree(root / folder)
    with pytest.raises(NOT_FOUND[kind], match=folder.replace("<", ".").replace(">", ".")):
        open_fixture(kind, root)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("which", ["image", "mask"])
def test_corrupt_file_names_it(kind, which, copy):
    root = copy(kind)
    _, _, image_rel, mask_rel = FIXTURES[kind]
    bad = root / (image_rel if which == "image" else mask_rel)
    bad.write_bytes(b"not an image at all")
    ds = open_fixture(kind, root)
    with pytest.raises(DataError, match=bad.name):
        ds.load(first_index_of(ds, image_rel, root))


@pytest.mark.parametrize("kind, bad_id", [("loveda", 8), ("openearthmap", 9), ("folder", 4)])
def test_bad_class_id_in_mask(kind, bad_id, copy):
    root = copy(kind)
    _, _, image_rel, mask_rel = FIXTURES[kind]
    mask = read_mask(root / mask_rel).copy()
    mask[3, 3] = bad_id
    Image.fromarray(mask, mode="L").save(root / mask_rel)
    ds = open_fixture(kind, root)
    with pytest.raises(DataError, match=rf"{Path(mask_rel).name}: mask holds class id\(s\) \[{bad_id}\]") as e:
        ds.load(first_index_of(ds, image_rel, root))
    assert "class map" in str(e.value) and "add them" in str(e.value)


@pytest.mark.parametrize("kind", KINDS)
def test_mask_size_mismatch(kind, copy):
    root = copy(kind)
    _, _, image_rel, mask_rel = FIXTURES[kind]
    Image.fromarray(np.ones((10, 12), np.uint8), mode="L").save(root / mask_rel)
    ds = open_fixture(kind, root)
    with pytest.raises(DataError, match="mask is 12x10 but its image"):
        ds.load(first_index_of(ds, image_rel, root))


@pytest.mark.parametrize("kind, valid", [("loveda", "train, val"), ("openearthmap", "train, val, test"),
                                         ("folder", "train, val, test")])
def test_bad_split(kind, valid):
    cls = {"loveda": LoveDA, "openearthmap": OpenEarthMap, "folder": FolderSource}[kind]
    kw = {"class_map": FOLDER_MAP, "gsd": 0.5} if kind == "folder" else {}
    with pytest.raises(ConfigError, match=f"split 'training' is not one of its splits; valid: {valid}"):
        cls(DATA / kind, "aerial10", split="training", **kw)


def test_loveda_splits_scenes_and_stems():
    ds = LoveDA(DATA / "loveda", "aerial10")
    assert ds.stems == ["urban_1366", "rural_0", "rural_1", "urban_3514", "rural_2522"]
    assert ds.splits == ["train", "train", "train", "val", "val"]  # Test/ has no masks and is never read
    assert len(LoveDA(DATA / "loveda", "aerial10", split="train")) == 3
    assert LoveDA(DATA / "loveda", "aerial10", split="val").stems == ["urban_3514", "rural_2522"]
    assert LoveDA(DATA / "loveda", "aerial10", scenes=("Urban",)).stems == ["urban_1366", "urban_3514"]
    with pytest.raises(ConfigError, match="valid: train, val"):
        LoveDA(DATA / "loveda", "aerial10", split="test")
    with pytest.raises(ConfigError, match="use one or both of Urban, Rural"):
        LoveDA(DATA / "loveda", "aerial10", scenes=("Suburban",))
    assert (ds.gsd, ds.provides) == (0.3, (1, 2, 3, 4, 5))


def test_loveda_test_only_and_missing_mask(copy):
    root = copy("loveda")
    (root / "Train" / "Urban" / "masks_png" / "1366.png").unlink()
    with pytest.raises(DataError, match=r"no mask for 1 image\(s\) \(1366.png\)"):
        LoveDA(root, "aerial10")
    shutil.rmtree(root / "Train")
    shutil.rmtree(root / "Val")
    with pytest.raises(LoveDANotFoundError, match="Only Test/ is there, and LoveDA publishes no masks for it"):
        LoveDA(root, "aerial10")


def test_loveda_stem_seen_twice(copy):
    root = copy("loveda")
    for sub in ("images_png", "masks_png"):
        shutil.copy(root / "Train" / "Rural" / sub / "0.png", root / "Val" / "Rural" / sub / "0.png")
    with pytest.raises(DataError, match="same stem 'rural_0'"):
        LoveDA(root, "aerial10")


def test_openearthmap_lists_skips_and_splits(copy):
    ds = OpenEarthMap(DATA / "openearthmap", "aerial10")
    assert ds.stems == ["aachen_1", "chicago_2", "aachen_2", "chicago_5"]
    assert ds.splits == ["train", "train", "val", "test"]
    why = {Path(f).name: reason for f, reason in ds.skipped}
    assert why["palu_1.tif"].startswith("no image") and "compile_xbd" in why["palu_1.tif"]  # xBD: label only
    assert why["aachen_3.tif"] == "test label withheld"
    assert OpenEarthMap(DATA / "openearthmap", "aerial10", split="test").stems == ["chicago_5"]
    assert (ds.gsd, OpenEarthMap(DATA / "openearthmap", "aerial10", gsd=0.25).gsd) == (0.5, 0.25)
    # without split lists: every image with a label, no splits
    root = copy("openearthmap")
    for f in root.glob("*.txt"):
        f.unlink()
    bare = OpenEarthMap(root, "aerial10")
    assert bare.splits is None and sorted(bare.stems) == ["aachen_1", "aachen_2", "chicago_2", "chicago_5"]
    assert [Path(f).name for f, _ in bare.skipped] == ["aachen_3.tif"]


def test_openearthmap_listed_train_tile_without_label(copy):
    root = copy("openearthmap")
    (root / "chicago" / "labels" / "chicago_2.tif").unlink()
    with pytest.raises(DataError, match="listed in train.txt but .* has no chicago_2.tif"):
        OpenEarthMap(root, "aerial10")


def test_openearthmap_nothing_usable(copy):
    root = copy("openearthmap")
    for images in root.glob("*/images"):
        shutil.rmtree(images)
    with pytest.raises(OpenEarthMapNotFoundError, match="listed file.* were left out, e.g. .*: no image"):
        OpenEarthMap(root, "aerial10")


def test_folder_options_lists_and_missing_mask(copy):
    root = copy("folder")
    (root / "train.txt").write_text("a.jpg\nb\n")
    (root / "val.txt").write_text("# held out\nc\n")
    ds = FolderSource(root, "aerial10", class_map=FOLDER_MAP, gsd=0.1)
    assert (ds.stems, ds.splits, ds.gsd) == (["a", "b", "c"], ["train", "train", "val"], 0.1)
    assert FolderSource(root, "aerial10", class_map=FOLDER_MAP, gsd=0.1, split="val").stems == ["c"]
    (root / "val.txt").write_text("c\nd\n")
    with pytest.raises(DataError, match=r"split lists name 1 stem\(s\) with no image in images/ \(d\)"):
        FolderSource(root, "aerial10", class_map=FOLDER_MAP, gsd=0.1)
    (root / "val.txt").write_text("a\n")
    with pytest.raises(DataError, match="val.txt: a is also listed in train.txt"):
        FolderSource(root, "aerial10", class_map=FOLDER_MAP, gsd=0.1)
    for f in root.glob("*.txt"):
        f.unlink()
    (root / "masks").rename(root / "labels")
    (root / "labels" / "b.png").rename(root / "labels" / "b_mask.png")
    with pytest.raises(DataError, match=r"no mask for 2 image\(s\) \(a.jpg, c.tif\)"):
        FolderSource(root, "aerial10", class_map=FOLDER_MAP, gsd=0.1, masks_dir="labels", mask_suffix="_mask.png")


def test_folder_needs_class_map_and_gsd(copy, tmp_path):
    with pytest.raises(ConfigError, match="needs a class map .*example_folder.yaml"):
        open_source(SourceSpec("folder", DATA / "folder", gsd=0.5), "aerial10")
    with pytest.raises(ConfigError, match="no ground resolution; give gsd"):
        open_source(SourceSpec("folder", DATA / "folder", class_map=FOLDER_MAP), "aerial10")
    with_gsd = tmp_path / "with_gsd.yaml"
    with_gsd.write_text(FOLDER_MAP.read_text() + "gsd: 0.05\n")
    assert open_source(SourceSpec("folder", DATA / "folder", class_map=with_gsd), "aerial10").gsd == 0.05


# ---------------------------------------------------------------------------------------------------- class maps
@pytest.mark.parametrize("table", ["seed10", "aerial10"])
def test_shipped_maps_load_for_both_tables(table):
    maps = {p.stem: p for p in CLASS_MAP_DIR.glob("*.yaml")}
    assert {"loveda", "openearthmap", "example_folder"} <= set(maps)
    for name, path in maps.items():
        cmap = load_class_map(path, table, kind=name if name in ("loveda", "openearthmap") else "folder")
        assert cmap.provides and cmap.targets
    loveda = load_class_map(None, table, kind="loveda")
    assert sorted(loveda.targets) == list(range(8)) and loveda.gsd == 0.3
    assert loveda.names[1] == "background" and loveda.targets[0] == loveda.targets[1] == IGNORE
    oem = load_class_map(None, table, kind="openearthmap")
    assert sorted(oem.targets) == list(range(9)) and oem.gsd == 0.5 and oem.targets[0] == IGNORE


def test_class_map_errors_name_file_entry_and_groups(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("source: mine\ngsd: -1\nclasses:\n  0: [nothing, ignore]\n  1: [lawn, grass]\n"
                   "  two: [x, water]\n  3: [roof]\n  300: [y, water]\n")
    with pytest.raises(ConfigError) as e:
        load_class_map(bad, "aerial10", kind="folder")
    msg = str(e.value)
    assert "5 problems" in msg and str(bad) in msg
    assert "classes: 1 (lawn): unknown group 'grass'; valid: unlabeled, artificial surface" in msg
    assert "markers and obstacles, ignore" in msg
    assert "gsd: -1 is not a ground resolution" in msg
    assert "key 'two' is not a class id" in msg and "key 300 is not a class id" in msg
    assert "3: expected [source class name, group name or ignore]" in msg
    with pytest.raises(ConfigError, match=r"the map is for 'openearthmap' but it was given to the loveda reader"):
        LoveDA(DATA / "loveda", "aerial10", class_map=CLASS_MAP_DIR / "openearthmap.yaml")
    with pytest.raises(ConfigError, match=r"class map .*nope.yaml not found; .*configs/classes/maps/loveda.yaml"):
        load_class_map(tmp_path / "nope.yaml", "aerial10")
    bad.write_text("classes: [0, 1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_class_map(bad, "aerial10")
    bad.write_text("classes: {}\n")
    with pytest.raises(ConfigError, match="non-empty 'classes' mapping"):
        load_class_map(bad, "aerial10")


# ---------------------------------------------------------------------------------------------------- gsd, marker
@pytest.mark.parametrize("kind", KINDS)
def test_synthetic_marker_gives_gsd(kind, copy):
    root = copy(kind)
    (root / SYNTHETIC_MARKER).write_text(json.dumps({"generator": "segcap synthetic.generate", "seed": 0, "gsd": 2.0}))
    plain = {"class_map": FOLDER_MAP} if kind == "folder" else {}
    ds = open_source(SourceSpec(kind, root, **plain), "aerial10")
    assert ds.synthetic and ds.gsd == 2.0
    assert open_source(SourceSpec(kind, root, gsd=0.7, **plain), "aerial10").gsd == 0.7  # given beats the marker
    (root / SYNTHETIC_MARKER).write_text("{broken")
    with pytest.raises(DataError, match=f"{SYNTHETIC_MARKER}: not valid JSON"):
        open_source(SourceSpec(kind, root, **plain), "aerial10")


@pytest.mark.parametrize("gsd", [0, -0.3, float("nan")])
def test_bad_gsd_refused(gsd):
    with pytest.raises(ConfigError, match="is not a ground resolution"):
        open_fixture("loveda", gsd=gsd)


def test_drone_is_a_source(tmp_path):
    ds = open_source(SourceSpec("drone", str(DATA / "drone")), "seed10")
    assert isinstance(ds, DroneDataset) and isinstance(ds, LabelledSource)
    assert (ds.name, ds.gsd, ds.synthetic, ds.splits) == ("drone", None, False, None)
    assert ds.provides == tuple(range(10))
    _, mask = ds.load(0)
    assert IGNORE not in mask
    assert open_source(SourceSpec("drone", DATA / "drone", gsd=0.02), "seed10").gsd == 0.02
    root = tmp_path / "drone"
    shutil.copytree(DATA / "drone", root, ignore=shutil.ignore_patterns("data.py"))
    (root / SYNTHETIC_MARKER).write_text(json.dumps({"generator": "segcap synthetic.generate", "gsd": 0.25}))
    marked = DroneDataset(root, "seed10")
    assert marked.synthetic and marked.gsd == 0.25
    with pytest.raises(ConfigError, match="maps its 24 classes through the class table"):
        open_source(SourceSpec("drone", DATA / "drone", class_map=CLASS_MAP_DIR / "loveda.yaml"), "seed10")


def test_source_spec_and_unknown_kind():
    s = SourceSpec("loveda", "/data/LoveDA", class_map="m.yaml")
    assert s.root == Path("/data/LoveDA") and s.class_map == Path("m.yaml") and s.gsd is None
    with pytest.raises(ConfigError, match="source kind 'potsdam' is unknown; use one of drone, loveda"):
        open_source(SourceSpec("potsdam", DATA), "aerial10")


def test_a_new_source_kind_is_one_reader_and_one_entry(monkeypatch):
    assert tuple(SOURCE_KINDS) == ("drone", "loveda", "openearthmap", "folder")  # the kinds' order: KINDS, Kind
    assert all(entry.reader.name == kind for kind, entry in SOURCE_KINDS.items())

    class Toy(FolderSource):
        name = "toy"

    monkeypatch.setitem(SOURCE_KINDS, "toy", SourceKind(Toy, "images/ and masks/"))
    src = open_source(SourceSpec("toy", DATA / "folder", gsd=0.5, class_map=FOLDER_MAP), "aerial10")
    assert isinstance(src, Toy) and src.name == "toy" and len(src) == FIXTURES["folder"][0]
    # no shipped configs/classes/maps/toy.yaml: like the folder reader, it takes a map written for any source
    assert load_class_map(FOLDER_MAP, "aerial10", kind="toy").source != "toy"


def test_data_layer_stays_torch_free():
    code = "import sys, aerialdata.sources; print('torch' in sys.modules, 'rasterio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------------------------------- real samples
@needs_real
@pytest.mark.parametrize("table", ["seed10", "aerial10"])
def test_real_loveda_tiles(table):
    ds = open_source(SourceSpec("loveda", REAL / "loveda"), table)
    assert ds.stems == ["rural_0", "rural_2"] and ds.splits == ["train", "val"] and ds.gsd == 0.3
    names = load_class_table(table).names
    present = {"rural_0": {"building", "artificial surface", "water", "vegetation"},  # + background (ignored)
               "rural_2": {"water", "vegetation"}}
    for i, stem in enumerate(ds.stems):
        assert ds.size(i) == (1024, 1024)
        image, mask = ds.load(i)
        raw = read_mask(ds.mask_paths[i])
        assert image.shape == (1024, 1024, 3) and mask.shape == raw.shape
        assert ((mask == IGNORE) == np.isin(raw, [0, 1])).all()  # no-data and background, nothing else
        groups = {names[g] for g in np.unique(mask) if g != IGNORE}
        assert groups == present[stem]
        counts = np.bincount(mask[mask != IGNORE], minlength=len(names))
        assert names[int(counts.argmax())] == "vegetation"  # both tiles are mostly fields and forest
        assert (mask == IGNORE).mean() < 0.2
        small, small_mask = ds.load(i, scale=0.25)
        assert small.shape == (256, 256, 3) and small_mask.shape == (256, 256)


@needs_real
def test_real_kaggle_class_dict_is_accepted(tmp_path):
    """The Kaggle copy's class_dict_seg.csv: a header and values with spaces, other colours for a few classes."""
    root = tmp_path / "drone"
    shutil.copytree(DATA / "drone", root, ignore=shutil.ignore_patterns("data.py"))
    shutil.copy(REAL / "drone" / "class_dict_seg.csv", root / "class_dict_seg.csv")
    assert " " in (root / "class_dict_seg.csv").read_text().splitlines()[1]
    ds = DroneDataset(root, "seed10")
    assert len(ds) == 6 and ds.load(0)[1].shape == (48, 64)


@needs_real
@pytest.mark.parametrize("name, json_name, images_dir, n, suffix", [
    ("rsicd", "dataset_rsicd.json", "RSICD_images", 5, ".jpg"),
    ("ucm", "dataset_ucm.json", "UCM_images", 9, ".tif"),
])
def test_real_caption_sets_and_their_images(name, json_name, images_dir, n, suffix):
    ds = CaptionDataset(REAL / name, json_name=json_name, images_dir=images_dir)
    assert len(ds) == n and ds.dataset_name == name
    assert {it.split for it in ds} == {"train", "val", "test"}
    assert all(len(it.sentences) == 5 and all(s.strip() for s in it.sentences) for it in ds)
    for it in ds:
        path = ds.image_path(it.filename)
        assert path.suffix == suffix
        image = read_rgb(path)
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) >= 224
        assert image.std() > 5  # a photo, not a blank decode
