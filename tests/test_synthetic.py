"""synthetic.generate: determinism, the real formats, caption-content agreement with the masks, options, errors."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import synthetic.generate as gen
from aerialdata.captionset import CaptionDataset
from aerialdata.classes import SOURCE_ID, SOURCE_NAMES, load_class_table
from aerialdata.images import read_mask, read_rgb
from segcap.errors import ConfigError, OutputExistsError
from synthetic.captions import OTHER_WORDS, WORD_CLASSES, mentioned_classes, tokens
from synthetic.facts import scene_facts
from synthetic.generate import caption_sample, drone_sample, generate
from synthetic.grid import main as grid_main
from synthetic.scenes import CATEGORIES, draw_scene

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(drone_images=4, caption_images=36, drone_size=(160, 96), progress=False)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("syn") / "set"
    generate(out, seed=0, **SMALL)
    return out


# ------------------------------------------------------------------ determinism
def test_same_seed_same_bytes_other_seed_differs(small_set, tmp_path):
    generate(tmp_path / "again", seed=0, **SMALL)
    assert _digest(tmp_path / "again") == _digest(small_set)
    generate(tmp_path / "other", seed=1, **SMALL)
    a, b = _digest(small_set), _digest(tmp_path / "other")
    assert a.keys() == b.keys()
    images = [k for k in a if k.endswith(".jpg")]
    assert sum(a[k] != b[k] for k in images) == len(images)


# ------------------------------------------------------------------ formats
def test_caption_set_parses_as_rsicd(small_set):
    root = small_set / "rsicd"
    ds = CaptionDataset(root)
    assert len(ds) == 36 and ds.has_masks
    assert {it.split for it in ds} == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        assert len(CaptionDataset(root, split=split)) >= len(CATEGORIES) if split == "train" else True
    assert sorted(set(ds.categories().values())) == sorted(CATEGORIES)
    raw = json.loads((root / "dataset_rsicd.json").read_text())
    sentids = set()
    for im, it in zip(raw["images"], ds, strict=True):
        assert re.fullmatch(r"[a-z]+_\d+\.jpg", im["filename"])
        assert it.category == im["filename"].rsplit("_", 1)[0]
        assert len(im["sentences"]) == 5 and im["sentids"] == [s["sentid"] for s in im["sentences"]]
        for s in im["sentences"]:
            assert s["imgid"] == im["imgid"] and s["tokens"] == tokens(s["raw"]) and s["raw"].endswith(" .")
            sentids.add(s["sentid"])
        rgb = read_rgb(ds.image_path(it.filename))
        mask = read_mask(ds.mask_path(it.filename))
        assert rgb.shape == (224, 224, 3) and mask.shape == (224, 224)
        assert mask.max() < len(SOURCE_NAMES)
    assert len(sentids) == 5 * len(ds)
    for cat in CATEGORIES:
        listed = (root / "txtclasses_rsicd" / f"{cat}.txt").read_text().split()
        assert listed == [it.filename for it in ds if it.category == cat]


def test_drone_set_format(small_set):
    d = small_set / "drone"
    rows = (d / "class_dict_seg.csv").read_text().strip().splitlines()
    assert rows[0] == "name,r,g,b" and len(rows) == 25
    assert [r.split(",")[0] for r in rows[1:]] == list(SOURCE_NAMES)
    images = sorted((d / "original_images").glob("*.jpg"))
    masks = sorted((d / "label_images_semantic").glob("*.png"))
    assert [p.stem for p in images] == [p.stem for p in masks] and len(images) == 4
    for im, m in zip(images, masks, strict=True):
        rgb, mask = read_rgb(im), read_mask(m)
        assert rgb.shape == (96, 160, 3) and mask.shape == (96, 160) and mask.max() <= 23
        load_class_table("seed10").group(mask, where=m)  # every id is a drone source id


def test_each_set_carries_the_synthetic_marker(small_set, tmp_path):
    drone = json.loads((small_set / "drone" / gen.MARKER).read_text())
    rsicd = json.loads((small_set / "rsicd" / gen.MARKER).read_text())
    assert gen.MARKER == "segcap_synthetic.json"
    for m in (drone, rsicd):
        assert m["generator"] == "segcap synthetic.generate" and m["seed"] == 0 and m["world_metres"] == 224.0
        assert m["categories"] == list(CATEGORIES) and m["drone_scale"] == 4.0
    assert drone["set"] == "drone" and drone["gsd"] == 0.25 and drone["images"] == 4 and drone["image_size"] == [160, 96]
    assert rsicd["set"] == "rsicd" and rsicd["gsd"] == 1.0 and rsicd["images"] == 36 and rsicd["image_size"] == 224
    # the settings reach the marker; a set not written gets none
    generate(tmp_path / "w", seed=3, drone_images=0, caption_images=2, caption_size=112, drone_scale=2.0,
             categories=["pond", "river"], progress=False)
    assert not (tmp_path / "w" / "drone").exists()
    m = json.loads((tmp_path / "w" / "rsicd" / gen.MARKER).read_text())
    assert (m["seed"], m["gsd"], m["images"], m["categories"]) == (3, 2.0, 2, ["pond", "river"])


def test_drone_set_uses_many_source_classes_and_is_finer():
    seen = set()
    for i in range(8):
        _, label, _ = drone_sample(i, seed=0)
        seen |= set(np.unique(label).tolist())
    # all but "conflicting" (rare in the real set, not drawn) appear in a handful of scenes
    assert len(seen) >= 20, sorted(SOURCE_NAMES[i] for i in seen)
    seed10 = load_class_table("seed10")
    groups = {int(seed10.lut[i]) for i in seen}
    assert groups == set(range(10))
    # the scale gap: a house covers drone_scale^2 times more pixels in the drone set

    areas = []
    for s in (1.0, 4.0):
        cv = draw_scene("denseresidential", int(56 * s), int(56 * s), s, np.random.default_rng(3))
        areas.append((cv.label() == SOURCE_ID["roof"]).sum())
    assert 10 < areas[1] / max(areas[0], 1) < 22


# ------------------------------------------------------------------ captions agree with the masks
def _count_claims(caption: str, noun: str) -> list[str]:
    return re.findall(rf"\b(a lot of|lots of|a few|an|a|one|two|three|four|five|some|several|many)\s+(?:\w+\s+)?{noun}",
                      caption)


def test_captions_name_only_what_the_mask_holds(small_set):
    root = small_set / "rsicd"
    ds = CaptionDataset(root)
    raw = {im["filename"]: im for im in json.loads((root / "dataset_rsicd.json").read_text())["images"]}
    for it in ds:
        mask = read_mask(ds.mask_path(it.filename))
        hist = np.bincount(mask.ravel(), minlength=24)
        facts = raw[it.filename]["scene"]
        # the stored facts are what the mask says, not what the layout meant
        assert facts == json.loads(json.dumps(scene_facts(mask, it.category, 1.0)))
        for cap in it.sentences:
            for word, classes in mentioned_classes(cap).items():
                assert any(hist[SOURCE_ID[c]] for c in classes), (it.filename, cap, word)
            assert set(tokens(cap)) <= set(WORD_CLASSES) | OTHER_WORDS, cap
            n_b = facts["counts"].get("building", 0)
            for q in _count_claims(cap, r"(?:buildings?|houses?|factor(?:y|ies))\b"):
                if q in ("a", "an", "one"):
                    assert n_b == 1, (cap, n_b)
                elif q in ("many", "lots of", "a lot of"):
                    assert n_b >= 6, (cap, n_b)
                else:
                    assert 2 <= n_b <= 9, (cap, n_b)


def test_word_mapping_names_real_classes():
    for word, classes in WORD_CLASSES.items():
        assert classes and all(c in SOURCE_ID for c in classes), word
    assert not set(WORD_CLASSES) & OTHER_WORDS
    assert mentioned_classes("Many buildings and green trees are around a pond .") == {
        "buildings": ("roof", "wall"), "trees": ("tree",), "pond": ("water",)}


def test_river_is_long_and_pond_is_compact():
    for i in range(6):
        *_, river = caption_sample("river", 1000 + i, size=112)
        *_, pond = caption_sample("pond", 2000 + i, size=112)
        assert river["water"]["elongation"] >= 2.5, river["water"]
        assert pond["water"]["elongation"] <= 2.0, pond["water"]


def test_captions_vary():
    caps = [c for i in range(24) for c in caption_sample(CATEGORIES[i % 12], i, size=96)[2]]
    assert len(set(caps)) > 0.3 * len(caps)


# ------------------------------------------------------------------ options and errors
def test_categories_option(tmp_path):
    out = generate(tmp_path / "w", categories=["pond", "river"], drone_images=2, caption_images=6,
                   drone_size=(96, 64), progress=False)
    assert out["categories"] == ["pond", "river"]
    ds = CaptionDataset(tmp_path / "w" / "rsicd")
    assert sorted(set(ds.categories().values())) == ["pond", "river"]
    assert sorted(p.stem for p in (tmp_path / "w" / "rsicd" / "txtclasses_rsicd").iterdir()) == ["pond", "river"]


def test_bad_options_all_reported(tmp_path):
    with pytest.raises(ConfigError) as e:
        generate(tmp_path / "x", drone_images=-1, caption_images=0, caption_size=10, drone_scale=0,
                 categories=["lake", "pond"], progress=False)
    msg = str(e.value)
    for part in ("drone_images -1 is invalid; expected an integer >= 0", "caption_size 10 is invalid; expected an "
                 "integer >= 64", "drone_scale 0 is invalid; expected a number in (0, 64]",
                 "categories[0] 'lake' is not one of bareland, beach"):
        assert part in msg
    assert not (tmp_path / "x").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthetic.generate", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_bad_options_exit_2(tmp_path):
    r = _cli("--out", str(tmp_path / "x"), "--categories", "lake", "--caption-images", "0", "--drone-images", "-3",
             "--no-progress")
    assert r.returncode == 2
    assert "error:" in r.stderr and "'lake' is not one of bareland" in r.stderr and "--drone-images" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x").exists()


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(OutputExistsError):
        generate(out, drone_images=1, caption_images=12, drone_size=(96, 64), progress=False)
    r = _cli("--out", str(out), "--drone-images", "1", "--caption-images", "12", "--drone-size", "96", "64",
             "--no-progress")
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert (out / "mine.txt").read_text() == "keep me"
    generate(out, drone_images=1, caption_images=12, drone_size=(96, 64), overwrite=True, progress=False)
    assert not (out / "mine.txt").exists() and (out / "rsicd" / "dataset_rsicd.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["o"]  # no temporary folders left beside it


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):

    calls = {"n": 0}
    real = gen.caption_sample

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(gen, "caption_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        gen.generate(tmp_path / "never", drone_images=1, caption_images=12, drone_size=(96, 64), progress=False)
    assert list(tmp_path.iterdir()) == []


def test_grid_png_from_written_set(small_set, tmp_path):

    out = grid_main(out=tmp_path / "grid.png", data=small_set, drone=2)
    rgb = read_rgb(out)
    assert rgb.shape[0] > 500 and rgb.shape[1] > 1000 and rgb.std() > 20
    with pytest.raises(OutputExistsError):
        grid_main(out=out, data=small_set)
