"""composition CLIs: extract over a folder of PNG masks (bad-file policy, order, workers, overwrite), show."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from aerialdata.classes import load_class_table
from aerialdata.images import read_mask
from composition import extract as extract_mod
from composition import show as show_mod
from composition.config import DEFAULT_CONFIG_PATH
from composition.schema import read_jsonl
from segcap.cli import run
from segcap.options import config_kwargs, options_of

DATA = Path(__file__).resolve().parent / "data" / "composition"
GOOD = ["pond_1", "river_3", "road_2"]  # file order


def good_masks(tmp_path):
    d = tmp_path / "masks"
    d.mkdir()
    for stem in GOOD:
        (d / f"{stem}.png").write_bytes((DATA / "masks" / f"{stem}.png").read_bytes())
    return d


def cli(main, args, capsys, positional=()):
    """Run an entry point like the shell does; return (exit code, stderr)."""
    try:
        run(main, [str(a) for a in args], positional=positional)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def test_extract_skips_and_reports_a_corrupt_file(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    code, err = cli(extract_mod.main, ["--masks", DATA / "masks", "--out", out], capsys)
    assert code == 0
    assert "corrupt.png" in err and "skipped 1" in err
    records = read_jsonl(out)
    assert [r["image"] for r in records] == [f"{s}.jpg" for s in GOOD]
    table = load_class_table("seed10")
    for r in records:
        mask = read_mask(DATA / "masks" / f"{Path(r['image']).stem}.png")
        assert r == extract_mod.extract(mask, table, image=r["image"])


def test_extract_strict_stops_with_exit_2_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    code, err = cli(extract_mod.main, ["--masks", DATA / "masks", "--out", out, "--strict"], capsys)
    assert code == 2 and "\nerror: " in err and "corrupt.png" in err and "--strict" in err
    assert not out.exists()


def test_extract_refuses_to_overwrite(tmp_path, capsys):
    masks, out = good_masks(tmp_path), tmp_path / "c.jsonl"
    out.write_text("mine\n")
    code, err = cli(extract_mod.main, ["--masks", masks, "--out", out], capsys)
    assert code == 2 and "--overwrite" in err and out.read_text() == "mine\n"
    code, _ = cli(extract_mod.main, ["--masks", masks, "--out", out, "--overwrite"], capsys)
    assert code == 0 and len(read_jsonl(out)) == 3


def test_extract_source_ids_and_suffix(tmp_path, capsys):
    out = tmp_path / "gt.jsonl"
    code, _ = cli(extract_mod.main, ["--masks", DATA / "source_masks", "--out", out, "--source-ids",
                                     "--image-suffix", ".png"], capsys)
    assert code == 0
    gt = read_jsonl(out)
    assert [r["image"] for r in gt] == [f"{s}.png" for s in GOOD]
    pred = tmp_path / "pred.jsonl"
    cli(extract_mod.main, ["--masks", good_masks(tmp_path), "--out", pred], capsys)
    # grouped source ids give the same records as the group-id masks of the same scenes
    assert [r["classes"] for r in gt] == [r["classes"] for r in read_jsonl(pred)]
    # without --source-ids, source ids such as tree (19) are out of range: the message says what to pass
    code, err = cli(extract_mod.main, ["--masks", DATA / "source_masks", "--out", tmp_path / "x.jsonl", "--strict"],
                    capsys)
    assert code == 2 and "river_3.png" in err and "--source-ids" in err and not (tmp_path / "x.jsonl").exists()


def test_extract_workers_keep_order(tmp_path, capsys):
    masks = good_masks(tmp_path)
    for i in range(6):  # a few more masks so that chunks interleave
        Image.fromarray(np.full((8, 8), i % 10, np.uint8), mode="L").save(masks / f"z_{i}.png")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert cli(extract_mod.main, ["--masks", masks, "--out", a], capsys)[0] == 0
    assert cli(extract_mod.main, ["--masks", masks, "--out", b, "--workers", "2"], capsys)[0] == 0
    assert a.read_bytes() == b.read_bytes()


def test_extract_config_file_and_flags(tmp_path, capsys):
    assert set(config_kwargs(extract_mod.main, DEFAULT_CONFIG_PATH)) <= set(
        options_of(extract_mod.main))  # every key of configs/composition.yaml is an option
    out = tmp_path / "c.jsonl"
    code, _ = cli(extract_mod.main, ["--masks", good_masks(tmp_path), "--out", out, "--config", DEFAULT_CONFIG_PATH,
                                     "--dominant-min-percent", "50"], capsys)
    assert code == 0
    road = read_jsonl(out)[2]
    # with only vegetation dominant, the buildings relate to it instead of the road
    assert [r for r in road["relations"] if r["subject"] == "building"][0]["object"] == "vegetation"


def test_extract_missing_or_empty_folder(tmp_path, capsys):
    code, err = cli(extract_mod.main, ["--masks", tmp_path / "nope", "--out", tmp_path / "c.jsonl"], capsys)
    assert code == 2 and "not found" in err
    (tmp_path / "empty").mkdir()
    code, err = cli(extract_mod.main, ["--masks", tmp_path / "empty", "--out", tmp_path / "c.jsonl"], capsys)
    assert code == 2 and "no PNG masks" in err


def scenes_file(path, stems, schema="segcap.scenes/1"):
    """A scene head's scenes.json (segmentation.predict's format) for the masks of ``stems``."""
    images = {stem: [{"name": stem.split("_")[0], "probability": 0.8}, {"name": "meadow", "probability": 0.15}]
              for stem in stems}
    path.write_text(json.dumps({"schema": schema, "classes": ["meadow", "pond", "river", "road"], "images": images}))
    return path


def test_extract_puts_the_scenes_beside_the_masks_into_the_records(tmp_path, capsys):
    masks, out = good_masks(tmp_path), tmp_path / "c.jsonl"
    plain = tmp_path / "plain.jsonl"
    cli(extract_mod.main, ["--masks", masks, "--out", plain], capsys)  # no scenes.json: no scenes
    scenes_file(masks / "scenes.json", GOOD)
    code, err = cli(extract_mod.main, ["--masks", masks, "--out", out], capsys)
    assert code == 0 and "with scenes" in err
    records = read_jsonl(out)
    assert [r["scenes"][0]["name"] for r in records] == ["pond", "river", "road"]
    assert all(r["schema"] == "segcap.composition/2" and r["scenes"][1] == {"name": "meadow", "probability": 0.15}
               for r in records)
    assert [{k: v for k, v in r.items() if k != "scenes"} for r in records] == read_jsonl(plain)
    code, _ = cli(extract_mod.main, ["--masks", masks, "--out", out, "--overwrite", "--scenes", "null"], capsys)
    assert code == 0 and read_jsonl(out) == read_jsonl(plain)  # --scenes null: left out
    elsewhere = scenes_file(tmp_path / "other.json", GOOD)
    (masks / "scenes.json").unlink()
    code, _ = cli(extract_mod.main, ["--masks", masks, "--out", out, "--overwrite", "--scenes", elsewhere], capsys)
    assert code == 0 and read_jsonl(out) == records
    shown = show_mod.table_text(records[1])
    assert "scenes: river 0.800, meadow 0.150" in shown and "prompt: scene: river 80%, meadow 15%\n" in shown
    img = tmp_path / "river_3.jpg"
    Image.fromarray(load_class_table("seed10").colors[read_mask(masks / "river_3.png")]).save(img)
    code, _ = cli(show_mod.main, [out, "--image", "river_3", "--overlay", img, "--out", tmp_path / "show.png"], capsys,
                  positional=("file",))
    assert code == 0 and (tmp_path / "show.png").stat().st_size > 0


def test_extract_scenes_missing_a_mask_or_not_the_format(tmp_path, capsys):
    masks, out = good_masks(tmp_path), tmp_path / "c.jsonl"
    scenes_file(masks / "scenes.json", GOOD[:1])
    code, err = cli(extract_mod.main, ["--masks", masks, "--out", out], capsys)
    assert code == 2 and f"{masks / 'scenes.json'}: no scenes for 2 of the 3 masks" in err
    assert "river_3, road_2" in err and "--scenes null" in err and not out.exists()
    bad = scenes_file(tmp_path / "bad.json", GOOD, schema="segcap.masks/1")
    code, err = cli(extract_mod.main, ["--masks", masks, "--out", out, "--scenes", bad], capsys)
    assert code == 2 and f"{bad}: not a segcap.scenes/1 file" in err and len(err.strip().splitlines()) == 1
    bad.write_text(json.dumps({"schema": "segcap.scenes/1", "images": {"pond_1": [{"name": "pond", "probability": 7}]}}))
    code, err = cli(extract_mod.main, ["--masks", masks, "--out", out, "--scenes", bad], capsys)
    assert code == 2 and "images/pond_1/0/probability" in err and not out.exists()
    code, err = cli(extract_mod.main, ["--masks", masks, "--out", out, "--scenes", tmp_path / "nope.json"], capsys)
    assert code == 2 and "scenes file not found" in err


def test_show_table_and_overlay(tmp_path, capsys):
    comps = tmp_path / "c.jsonl"
    cli(extract_mod.main, ["--masks", good_masks(tmp_path), "--out", comps], capsys)
    code, _ = cli(show_mod.main, [comps, "--image", "road_2"], capsys, positional=("file",))
    assert code == 0
    img = tmp_path / "road_2.jpg"
    mask = read_mask(DATA / "masks" / "road_2.png")
    Image.fromarray(load_class_table("seed10").colors[mask]).save(img)
    png = tmp_path / "show.png"
    code, _ = cli(show_mod.main, [comps, "--index", "2", "--overlay", img, "--mask", DATA / "masks" / "road_2.png",
                                  "--out", png], capsys, positional=("file",))
    assert code == 0
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 600


def test_show_table_text_lists_every_class():
    record = json.loads(json.dumps(extract_mod.extract(read_mask(DATA / "masks" / "road_2.png"),
                                                       load_class_table("seed10"), image="road_2.jpg")))
    text = show_mod.table_text(record)
    for c in record["classes"]:
        assert c["name"] in text and f"{c['percent']:.1f}" in text
    assert "building left of artificial surface" in text and "prompt: " in text


def test_show_errors(tmp_path, capsys):
    comps = tmp_path / "c.jsonl"
    cli(extract_mod.main, ["--masks", good_masks(tmp_path), "--out", comps], capsys)
    code, err = cli(show_mod.main, [comps, "--index", "7"], capsys, positional=("file",))
    assert code == 2 and "out of range" in err and "3 records" in err
    code, err = cli(show_mod.main, [comps, "--image", "forest_9.jpg"], capsys, positional=("file",))
    assert code == 2 and "forest_9.jpg" in err
    code, err = cli(show_mod.main, [comps, "--overlay", DATA / "masks" / "road_2.png"], capsys, positional=("file",))
    assert code == 2 and "--out" in err
