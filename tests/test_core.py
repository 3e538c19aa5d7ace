"""The shared core: CLI runner, errors, atomic writes, class tables, image and caption-set readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import yaml
from PIL import Image

from aerialdata.captionset import CaptionDataset, category_from_filename
from aerialdata.classes import NUM_SOURCE_CLASSES, SOURCE_ID, class_table_from_dict, load_class_table
from aerialdata.images import read_mask, read_rgb, write_mask
from bench.all import _last_json
from segcap import atomic
from segcap.cli import parse, run
from segcap.errors import ConfigError, DataError, DatasetNotFoundError, OutputExistsError

REPO = Path(__file__).resolve().parents[1]


def _entry(images: Path, batch_size: int = 16, overwrite: bool = False, mode: Literal["greedy", "beam"] = "greedy",
           names: list[str] | None = None) -> dict:
    """Toy entry point.

    Args:
        images: a folder.
        batch_size: a number.
        overwrite: a switch.
        mode: a choice.
        names: several values.
    """
    if batch_size <= 0:
        raise ConfigError(["batch_size must be positive", "another problem"])
    return {"images": images, "batch_size": batch_size, "overwrite": overwrite, "mode": mode, "names": names}


# ---------------------------------------------------------------- CLI
def test_cli_flags_config_and_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batch_size: 7\nimages: some/dir\nmode: beam\n")
    assert parse(_entry, ["--images", "a", "--batch-size", "3", "--overwrite", "--names", "x", "y"]) == {
        "images": Path("a"), "batch_size": 3, "overwrite": True, "mode": "greedy", "names": ["x", "y"]}
    out = parse(_entry, ["--config", str(cfg), "--batch_size", "9"])
    assert out["images"] == Path("some/dir") and out["batch_size"] == 9 and out["mode"] == "beam"


def test_cli_rejects_unknown_config_key_and_bad_choice(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("bogus: 1\n")
    with pytest.raises(ConfigError, match="unknown option.*bogus.*valid options: images"):
        parse(_entry, ["--config", str(cfg)])
    with pytest.raises(ConfigError, match="command line: --mode 'sample' is invalid; expected one of greedy, beam"):
        parse(_entry, ["--images", "a", "--mode", "sample"])
    with pytest.raises(ConfigError, match="missing required option.*--images"):
        parse(_entry, [])


def test_cli_switch_list_positional_and_alias_forms():
    assert parse(_entry, ["--images=a", "--no-overwrite", "--mode=beam"])["overwrite"] is False
    with pytest.raises(ConfigError, match="--overwrite/--no-overwrite: ignored explicit argument 'false'"):
        parse(_entry, ["--images", "a", "--overwrite=false"])  # a switch takes no value: --no-overwrite
    out = parse(_entry, ["x", "--names", "p", "q", "--batch_size", "2"], positional=("images",))
    assert out["images"] == Path("x") and out["names"] == ["p", "q"] and out["batch_size"] == 2
    assert parse(_entry, ["--pics", "a", "--bs", "5"], aliases={"images": ["--pics"], "batch_size": ["--bs"]}
                 )["batch_size"] == 5
    with pytest.raises(ConfigError, match="unexpected argument.*stray"):
        parse(_entry, ["--images", "a", "--overwrite", "stray"])
    with pytest.raises(ConfigError, match="argument --batch-size/--batch_size: expected one argument"):
        parse(_entry, ["--images", "a", "--batch-size"])


def test_cli_run_maps_errors_to_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        run(_entry, ["--images", "a", "--batch-size", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: 2 problems") and "batch_size must be positive" in err and "another problem" in err


def test_cli_run_sets_command_env_and_maps_interrupt_to_130(monkeypatch, capsys):
    def stopped(n: int = 1) -> None:
        """Toy entry point.

        Args:
            n: a number.
        """
        assert os.environ["MPLBACKEND"] == "Agg"
        raise KeyboardInterrupt

    monkeypatch.delenv("MPLBACKEND", raising=False)
    with pytest.raises(SystemExit) as e:
        run(stopped, [])
    assert e.value.code == 130 and "interrupted" in capsys.readouterr().err


def test_cli_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        parse(_entry, ["--config", str(tmp_path / "nope.yaml")])


# ---------------------------------------------------------------- atomic writes
def test_atomic_write_and_no_overwrite(tmp_path):
    p = tmp_path / "sub" / "x.json"
    atomic.write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    with pytest.raises(OutputExistsError, match="--overwrite"):
        atomic.check_writable(p, overwrite=False)
    assert atomic.check_writable(p, overwrite=True) == p


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    p = tmp_path / "out.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert p.read_text() == "old"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_folder_replace(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "old").write_text("1")
    with atomic.atomic_path(d) as tmp:
        tmp.mkdir()
        (tmp / "new").write_text("2")
    assert [x.name for x in d.iterdir()] == ["new"]


# ---------------------------------------------------------------- class tables
@pytest.mark.parametrize("name", ["seed10", "aerial10"])
def test_class_tables_cover_every_source_class(name):
    t = load_class_table(name)
    assert t.num_classes == 10 and t.names[0] == "unlabeled"
    assert (t.lut[:NUM_SOURCE_CLASSES] < 10).all()
    assert t.colors.shape == (10, 3)


def test_grouping_seed10_vs_aerial10():
    seed, aerial = load_class_table("seed10"), load_class_table("aerial10")
    src = np.array([[SOURCE_ID["roof"], SOURCE_ID["wall"], SOURCE_ID["pool"], SOURCE_ID["conflicting"]]], np.uint8)
    assert seed.group(src).tolist() == [[1, 5, 3, 0]]
    assert aerial.group(src).tolist() == [[5, 5, 3, 0]]
    assert seed.names[seed.group_of("bald-tree")] == "vegetation"


def test_grouping_rejects_bad_ids():
    with pytest.raises(DataError, match=r"m.png: mask holds ids \[24, 200\]"):
        load_class_table().group(np.array([[1, 24, 200]], np.uint8), where="m.png")


def test_class_table_validation_lists_every_problem():
    raw = load_class_table().to_dict()
    raw["groups"][1]["sources"].append("lava")
    raw["groups"][2]["sources"].remove("dirt")
    raw["groups"][3]["id"] = 7
    with pytest.raises(ConfigError) as e:
        class_table_from_dict(raw, where="t.yaml")
    msg = str(e.value)
    assert "lava" in msg and "dirt" in msg and "ids must be 0..N-1" in msg


def test_table_values_of_the_wrong_type_are_named_not_raised():
    raw = yaml.safe_load((REPO / "configs" / "classes" / "seed10.yaml").read_text())
    raw["groups"][1]["color"] = [140, "x", 40]
    raw["groups"][2]["id"] = "two"
    raw["groups"][3]["sources"] = "water"
    del raw["groups"][4]["name"]
    with pytest.raises(ConfigError) as e:
        class_table_from_dict(raw, where="t.yaml")
    msg = str(e.value)
    for part in ("t.yaml: group 'artificial surface': color must be [r, g, b]",
                 "group 'natural surface': id must be an integer (its position, 2), got 'two'",
                 "group 'water': sources must be a list", "group 4: needs id, name, color and sources (missing name)"):
        assert part in msg, part


def test_unknown_table_name():
    with pytest.raises(ConfigError, match="seed10"):
        load_class_table("nine")


# ---------------------------------------------------------------- images
def test_read_rgb_any_mode(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (8, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb).convert("RGBA").save(tmp_path / "b.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "c.png")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 200).save(tmp_path / "d.tif")
    assert (read_rgb(tmp_path / "a.png") == rgb).all()
    assert (read_rgb(tmp_path / "b.png") == rgb).all()
    assert read_rgb(tmp_path / "c.png").shape == (8, 10, 3)
    d = read_rgb(tmp_path / "d.tif")
    assert d.shape == (8, 10, 3) and d.dtype == np.uint8  # full 16-bit range: scaled linearly from 0..65535
    assert abs(int(d.max()) - int(rgb[..., 0].max()) * 200 / 257) <= 1
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match="bad.jpg: not a readable image"):
        read_rgb(tmp_path / "bad.jpg")


def test_mask_round_trip_palette(tmp_path):
    m = np.arange(10, dtype=np.uint8).repeat(3).reshape(5, 6)
    write_mask(tmp_path / "m.png", m, load_class_table().colors)
    with Image.open(tmp_path / "m.png") as im:
        assert im.mode == "P"
    assert (read_mask(tmp_path / "m.png") == m).all()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="single-channel"):
        read_mask(tmp_path / "rgb.png")


# ---------------------------------------------------------------- caption set
def _karpathy(root: Path, images: list[tuple[str, str]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = {"dataset": "toy", "images": [
        {"filename": fn, "imgid": i, "split": split, "sentids": [i],
         "sentences": [{"raw": f"caption of {fn} .", "tokens": ["caption", "of", fn], "imgid": i, "sentid": i}]}
        for i, (fn, split) in enumerate(images)]}
    (root / "dataset_rsicd.json").write_text(json.dumps(data))
    return root


def test_caption_dataset_karpathy(tmp_path):
    root = _karpathy(tmp_path / "r", [("pond_1.jpg", "train"), ("river_2.jpg", "test"), ("00012.jpg", "test")])
    (root / "txtclasses_rsicd").mkdir()
    (root / "txtclasses_rsicd" / "Forest.txt").write_text("00012.jpg\n")
    ds = CaptionDataset(root, split="test")
    assert [it.filename for it in ds] == ["river_2.jpg", "00012.jpg"]
    assert ds.categories() == {"river_2.jpg": "river", "00012.jpg": "forest"}
    assert ds.references()["river_2.jpg"] == ["caption of river_2.jpg ."]
    assert len(CaptionDataset(root / "dataset_rsicd.json")) == 3
    assert ds.image_path("river_2.jpg") == root / "RSICD_images" / "river_2.jpg"


def test_caption_dataset_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="synthetic.generate"):
        CaptionDataset(tmp_path / "missing")
    root = _karpathy(tmp_path / "r", [("a_1.jpg", "train")])
    with pytest.raises(ConfigError, match="splits present: train"):
        CaptionDataset(root, split="test")
    with pytest.raises(ConfigError, match="unknown split"):
        CaptionDataset(root, split="dev")
    (root / "dataset_rsicd.json").write_text("{broken")
    with pytest.raises(DataError, match="not valid JSON"):
        CaptionDataset(root)
    coco = {"images": [{"id": "7", "file_name": "a_1.jpg"}], "annotations": [{"image_id": "7", "caption": "x"}]}
    (root / "dataset_rsicd.json").write_text(json.dumps(coco))
    with pytest.raises(DataError, match=r"images\[0\] \(a_1.jpg\) has id '7'; image ids must be integers"):
        CaptionDataset(root)


def test_caption_dataset_reads_real_rsicd_coco_file():
    path = REPO.parent / "shared" / "anchors" / "rsicd-captions" / "captions_val.json"
    if not path.exists():
        pytest.skip("shared anchors not beside the checkout")
    ds = CaptionDataset(path, split="val")
    assert len(ds) == 1092 and all(len(it.sentences) == 5 for it in ds)
    assert category_from_filename("denseresidential_12.jpg") == "denseresidential"


def test_entry_point_exits_2_on_bad_input(tmp_path):
    code = ("from segcap.cli import run\nfrom segcap.errors import DataError\n"
            "def main(x: int = 1) -> None:\n    '''T.\n\n    Args:\n        x: n.\n    '''\n"
            "    raise DataError('f.png: broken; re-export it')\nrun(main)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "error: f.png: broken; re-export it"


def test_bench_all_reads_indented_and_one_line_json():


    assert _last_json("loading...\n" + json.dumps({"a": {"b": 1}}, indent=2) + "\n") == {"a": {"b": 1}}
    assert _last_json(json.dumps({"x": 1})) == {"x": 1}
    assert "failed" in _last_json("no figures")
