"""composition: records from hand-made masks with known answers, invariants, fast == reference, schema, text."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from aerialdata.classes import load_class_table
from bench.composition_speed import boxes_ab
from bench.composition_speed import main as bench
from bench.reference_extractor import boxes_reference, extract_reference
from composition import extract as extract_module
from composition.config import DEFAULT_CONFIG_PATH, CompositionConfig, load_config
from composition.extract import boxes, extract, with_scenes
from composition.features import PER_CLASS, scene_names, scene_vector, vector
from composition.health import FEW_ORDERS, MIN_IMAGES, class_order, flags_text, health
from composition.schema import SCHEMA_ID, problems, read_jsonl, validate, write_jsonl
from composition.text import PROMPT_VERSION, composition_text, scene_line, split_prompt, to_prompt
from segcap.errors import ConfigError, DataError

TABLE = load_class_table("seed10")
LLM_COMPOSITIONS = Path(__file__).resolve().parent / "data" / "llm" / "compositions.jsonl"  # segcap.composition/1
SCENES = [{"name": "airplane", "probability": 0.931}, {"name": "runway", "probability": 0.041},
          {"name": "freeway", "probability": 0.01}]
UNLABELED, ARTIFICIAL, NATURAL, WATER, VEGETATION, BUILDING, VEHICLES = 0, 1, 2, 3, 4, 5, 8


def by_name(record):
    return {c["name"]: c for c in record["classes"]}


def rel(record, subject):
    found = [r for r in record["relations"] if r["subject"] == subject]
    assert len(found) == 1, record["relations"]
    return found[0]["relation"], found[0]["object"]


def disc_scene(size=64, radius=12):
    m = np.full((size, size), VEGETATION, np.uint8)
    yy, xx = np.mgrid[:size, :size]
    m[(xx - (size - 1) / 2) ** 2 + (yy - (size - 1) / 2) ** 2 < radius**2] = WATER
    return m


def road_scene():
    """A vertical road, two buildings on its left touching it, vegetation elsewhere (60x60)."""
    m = np.full((60, 60), VEGETATION, np.uint8)
    m[:, 20:36] = ARTIFICIAL
    m[6:22, 0:20] = BUILDING
    m[40:56, 0:20] = BUILDING
    return m


def blobs(seed, size=48, classes=6, speckle=0.0):
    """Random blobby masks: coarse random grid upsampled (nearest), plus optional isolated pixels."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, classes, (size // 8, size // 6)).astype(np.uint8)
    m = cv2.resize(small, (size + seed % 7, size), interpolation=cv2.INTER_NEAREST)
    if speckle:
        noise = rng.random(m.shape) < speckle
        m[noise] = rng.integers(0, 10, int(noise.sum()))
    return m


# --------------------------------------------------------------------------------------- known answers
def test_disc_of_water_in_vegetation():
    r = extract(disc_scene(), TABLE, image="pond_1.jpg")
    water, veg = by_name(r)["water"], by_name(r)["vegetation"]
    assert [c["name"] for c in r["classes"]] == ["vegetation", "water"]
    assert water["position"] == "center" and water["regions"] == 1
    assert water["center"] == pytest.approx([0.5, 0.5], abs=0.01)
    assert water["centroid"] == pytest.approx([0.5, 0.5], abs=0.01)
    assert water["radius"] == pytest.approx(12 / 64, abs=0.01)  # the drawn disc's radius, over the side
    assert water["elongation"] == pytest.approx(1.0, abs=0.1)
    assert water["percent"] == pytest.approx(100 * math.pi * 12**2 / 64**2, abs=0.6)
    assert veg["bbox"] == [0.0, 0.0, 1.0, 1.0] and veg["regions"] == 1
    assert r["relations"] == [{"subject": "water", "relation": "surrounded by", "object": "vegetation"}]
    assert to_prompt(r) == ("vegetation 89% center, 1 region; water 11% center, 1 region, compact; "
                            "water surrounded by vegetation")


def test_two_buildings_left_of_a_road():
    r = extract(road_scene(), TABLE)
    b = by_name(r)["building"]
    assert b["regions"] == 2 and b["largest_region_percent"] == pytest.approx(100 * 320 / 3600, abs=0.1)
    assert b["position"] == "left"
    assert rel(r, "building") == ("left of", "artificial surface")
    road = by_name(r)["artificial surface"]
    assert road["elongation"] == pytest.approx(60 / 16, abs=0.05)  # 60 long, 16 wide
    assert road["bbox"] == pytest.approx([20 / 60, 0.0, 36 / 60, 1.0], abs=1e-3)


def test_directions_on_and_next_to():
    m = np.full((90, 90), VEGETATION, np.uint8)
    m[:, 37:53] = ARTIFICIAL  # dominant road (18%), vertical, down the middle
    m[0:6, 82:90] = WATER  # in the top right corner: touches the border, so not "surrounded"
    m[84:90, 0:6] = NATURAL  # bottom left corner
    m[43:47, 43:47] = VEHICLES  # inside the road
    r = extract(m, TABLE)
    assert rel(r, "water") == ("above right of", "vegetation")
    assert rel(r, "natural surface") == ("below left of", "vegetation")
    assert rel(r, "vehicles") == ("surrounded by", "artificial surface")
    assert rel(r, "artificial surface") == ("on", "vegetation")  # a road down the middle: centroids coincide
    m2 = np.full((90, 90), ARTIFICIAL, np.uint8)
    m2[25:65, 25:65] = VEGETATION  # a dominant block (20%) in paved surroundings
    m2[25:65, 65:72] = WATER  # a strip along its right side: touches it; centroids 0.26 apart
    assert rel(extract(m2, TABLE), "water") == ("right of", "vegetation")
    assert rel(extract(m2, TABLE, cfg=CompositionConfig(next_to_distance=0.3)), "water") == ("next to", "vegetation")


def test_river_across_the_image_is_not_surrounded():
    m = np.full((40, 40), VEGETATION, np.uint8)
    m[17:23, :] = WATER
    assert rel(extract(m, TABLE), "water")[0] != "surrounded by"
    assert by_name(extract(m, TABLE))["water"]["elongation"] > 5


# ------------------------------------------------------------------------------------------ invariants
@pytest.mark.parametrize("seed", range(8))
def test_percents_sum_to_100_and_sorted(seed):
    m = blobs(seed, classes=10, speckle=0.01)
    r = extract(m, TABLE)
    pct = [c["percent"] for c in r["classes"]]
    assert sum(round(p * 10) for p in pct) == 1000  # exact in tenths
    assert math.isclose(sum(pct), 100.0, abs_tol=1e-9)
    assert pct == sorted(pct, reverse=True) and min(pct) >= 0.1
    counts = np.bincount(m.ravel(), minlength=10)
    for c in r["classes"]:
        assert abs(c["percent"] - 100 * counts[c["id"]] / m.size) <= 0.1 + 1e-9
    validate(r)


def test_one_pixel_class_is_present_with_at_least_a_tenth():
    m = np.full((100, 100), VEGETATION, np.uint8)
    m[50, 50] = VEHICLES
    r = extract(m, TABLE)
    v = by_name(r)["vehicles"]
    assert v["percent"] == 0.1 and v["regions"] == 1 and by_name(r)["vegetation"]["percent"] == 99.9
    assert v["radius"] == pytest.approx(0.5 / 100)  # half a pixel


def test_empty_class_is_absent():
    r = extract(road_scene(), TABLE)
    assert {c["id"] for c in r["classes"]} == {ARTIFICIAL, VEGETATION, BUILDING}
    assert "water" not in {x for rr in r["relations"] for x in (rr["subject"], rr["object"])}


def test_all_unlabeled():
    r = validate(extract(np.zeros((20, 30), np.uint8), TABLE))
    assert len(r["classes"]) == 1 and r["classes"][0]["name"] == "unlabeled"
    assert r["classes"][0]["percent"] == 100.0 and r["relations"] == []
    assert (r["width"], r["height"]) == (30, 20)


def test_unlabeled_takes_no_part_in_relations():
    m = road_scene()
    m[:5, 50:] = UNLABELED
    r = extract(m, TABLE)
    assert all("unlabeled" not in (x["subject"], x["object"]) for x in r["relations"])


MIRROR = {"left of": "right of", "right of": "left of", "above left of": "above right of",
          "above right of": "above left of", "below left of": "below right of", "below right of": "below left of"}
POS_MIRROR = {"left": "right", "right": "left", "top left": "top right", "top right": "top left",
              "bottom left": "bottom right", "bottom right": "bottom left"}


@pytest.mark.parametrize("seed", range(6))
def test_horizontal_flip_mirrors_x_and_swaps_left_right(seed):
    m = blobs(seed, size=60, classes=5)
    a, b = extract(m, TABLE), extract(m[:, ::-1], TABLE)
    assert [c["id"] for c in a["classes"]] == [c["id"] for c in b["classes"]]
    for ca, cb in zip(a["classes"], b["classes"], strict=True):
        for key in ("percent", "regions", "largest_region_percent", "radius"):
            assert ca[key] == pytest.approx(cb[key], abs=1e-3), key
        assert cb["centroid"][0] == pytest.approx(1 - ca["centroid"][0], abs=1.1e-3)
        assert cb["centroid"][1] == ca["centroid"][1]
        assert cb["center"][0] == pytest.approx(1 - ca["center"][0], abs=2e-3)
        assert cb["bbox"] == pytest.approx([1 - ca["bbox"][2], ca["bbox"][1], 1 - ca["bbox"][0], ca["bbox"][3]],
                                           abs=1.1e-3)
        assert cb["position"] == POS_MIRROR.get(ca["position"], ca["position"])
    expected = [{**x, "relation": MIRROR.get(x["relation"], x["relation"])} for x in a["relations"]]
    assert b["relations"] == expected
    assert a["relations"], "the random scene should have relations"


def test_flip_of_road_scene_gives_right_of():
    assert rel(extract(road_scene()[:, ::-1], TABLE), "building") == ("right of", "artificial surface")


# ----------------------------------------------------------------------------------- fast == reference
def nested_scene():
    """A water ring with a water island inside (a component in another's hole), and many specks."""
    m = np.full((50, 50), VEGETATION, np.uint8)
    cv2.circle(m, (25, 25), 20, WATER, 2)
    cv2.circle(m, (25, 25), 12, WATER, -1)  # larger than the ring: the largest component has no outer contour
    m[::7, ::9] = VEHICLES  # 8 x 6 specks: more components than the per-box path takes
    return m


@pytest.mark.parametrize("seed", range(12))
def test_fast_equals_reference_on_random_masks(seed):
    rng = np.random.default_rng(seed)
    h, w = (int(v) for v in rng.integers(5, 70, 2))
    k = int(rng.integers(1, 11))
    if seed % 3 == 0:
        m = rng.integers(0, k, (h, w)).astype(np.uint8)  # pure noise: many tiny components
    else:
        m = cv2.resize(rng.integers(0, k, (max(2, h // 6), max(2, w // 6))).astype(np.uint8), (w, h),
                       interpolation=cv2.INTER_NEAREST)
        m[rng.random((h, w)) < 0.02] = int(rng.integers(0, k))
    assert extract(m, TABLE) == extract_reference(m, TABLE)


@pytest.mark.parametrize("num_classes", [1, 10, 17, 40, 64, 200])
def test_boxes_match_opencv_per_class(num_classes):
    """The one-pass bounding boxes equal cv2.boundingRect per class, for every bit width and the fallback."""
    rng = np.random.default_rng(num_classes)
    for h, w in ((1, 1), (1, 9), (13, 1), (37, 52)):
        m = rng.integers(0, num_classes, (h, w)).astype(np.uint8)
        m[rng.random((h, w)) < 0.7] = num_classes - 1  # mostly one class: some ids absent, sparse boxes
        assert boxes(m, num_classes) == boxes_reference(m, num_classes)


@pytest.mark.parametrize("scene", [disc_scene, road_scene, nested_scene])
def test_fast_equals_reference_on_hand_made_masks(scene):
    m = scene()
    assert extract(m, TABLE) == extract_reference(m, TABLE)
    assert extract(m[::-1].T.copy(), TABLE) == extract_reference(m[::-1].T.copy(), TABLE)


def test_nested_component_counts_and_largest():
    r = extract(nested_scene(), TABLE)
    water = by_name(r)["water"]
    assert water["regions"] == 2
    disc = np.zeros((50, 50), np.uint8)
    cv2.circle(disc, (25, 25), 12, 1, -1)
    disc[::7, ::9] = 0  # the specks punch single pixels out of it
    assert water["largest_region_percent"] == round(100 * disc.sum() / 2500, 1)
    assert by_name(r)["vehicles"]["regions"] == 1  # 48 single pixels, all under min_region_pixels (4)
    fine = extract(nested_scene(), TABLE, cfg=CompositionConfig(min_region_pixels=1))
    assert by_name(fine)["vehicles"]["regions"] == 48
    assert fine == extract_reference(nested_scene(), TABLE, cfg=CompositionConfig(min_region_pixels=1))


def test_other_integer_dtypes_are_accepted():
    m = road_scene()
    assert extract(m.astype(np.int64), TABLE) == extract(m, TABLE)


# ---------------------------------------------------------------------------------------- bad masks
@pytest.mark.parametrize("mask, match", [
    (np.full((8, 8), 10, np.uint8), r"ids \[10\] outside 0\.\.9"),
    (np.full((8, 8), -1, np.int32), r"ids \[-1\]"),
    (np.zeros((8, 8, 3), np.uint8), "2-D .* colour rendering"),
    (np.zeros(8, np.uint8), "2-D"),
    (np.zeros((8, 8), np.float32), "integer class ids"),
    (np.zeros((0, 8), np.uint8), "empty"),
])
def test_bad_mask_values_give_a_clear_error(mask, match):
    with pytest.raises(DataError, match=match) as e:
        extract(mask, TABLE, image="tile_7.jpg")
    assert "tile_7.jpg" in str(e.value)


def test_source_id_mask_hints_at_source_ids():
    m = np.full((8, 8), 19, np.uint8)  # "tree" in source ids
    with pytest.raises(DataError, match="--source-ids"):
        extract(m, TABLE)


# ------------------------------------------------------------------------------------------- config
def test_config_file_equals_dataclass_defaults():
    assert load_config(DEFAULT_CONFIG_PATH) == CompositionConfig()


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("min_region_pixel: 3\n")
    with pytest.raises(ConfigError, match="unknown key.*min_region_pixel"):
        load_config(p)
    with pytest.raises(ConfigError, match="2 problems"):
        CompositionConfig(min_region_pixels=0, on_distance=0.5)


def test_min_region_pixels_changes_region_count():
    m = np.full((40, 40), VEGETATION, np.uint8)
    m[5:10, 5:10] = WATER
    m[30, 30] = WATER
    assert by_name(extract(m, TABLE))["water"]["regions"] == 1
    assert by_name(extract(m, TABLE, cfg=CompositionConfig(min_region_pixels=1)))["water"]["regions"] == 2


# ------------------------------------------------------------------------------------------- schema
def test_schema_round_trip(tmp_path):
    records = [extract(s(), TABLE, image=f"{s.__name__}.jpg") for s in (disc_scene, road_scene, nested_scene)]
    records.append(extract(np.zeros((4, 4), np.uint8), TABLE, image="blank.jpg"))
    path = write_jsonl(tmp_path / "c.jsonl", records)
    assert read_jsonl(path) == records
    assert [json.loads(line) for line in path.read_text().splitlines()] == records


@pytest.mark.parametrize("mutate, match", [
    (lambda r: r["classes"][0].update(percent=-1), "percent"),
    (lambda r: r["classes"][0].pop("centroid"), "centroid"),
    (lambda r: r.update(schema="segcap.composition/0"), "schema"),
    (lambda r: r["classes"][0].update(position="middle"), "position"),
    (lambda r: r["relations"][0].update(relation="inside"), "relation"),
    (lambda r: r["relations"][0].update(object="forest"), "not a class of this record"),
    (lambda r: r["classes"].reverse(), "not sorted"),
    (lambda r: r["classes"][1].update(percent=1.0), "sum to"),
])
def test_bad_record_names_file_and_line(tmp_path, mutate, match):
    good, bad = extract(disc_scene(), TABLE), extract(disc_scene(), TABLE)
    mutate(bad)
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=match) as e:
        read_jsonl(path)
    assert f"{path}:3:" in str(e.value)


def test_not_json_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(extract(disc_scene(), TABLE)) + "\n{oops\n")
    with pytest.raises(DataError, match=r"c\.jsonl:2: not JSON"):
        read_jsonl(path)


def test_write_jsonl_refuses_invalid_records(tmp_path):
    r = extract(disc_scene(), TABLE)
    r["width"] = 0
    with pytest.raises(DataError, match="width"):
        write_jsonl(tmp_path / "c.jsonl", [r])
    assert not (tmp_path / "c.jsonl").exists()


def test_schema_2_is_written_and_1_still_reads(tmp_path):
    assert SCHEMA_ID == "segcap.composition/2" and extract(disc_scene(), TABLE)["schema"] == SCHEMA_ID
    old = read_jsonl(LLM_COMPOSITIONS)  # written before scenes: /1, and valid as it is
    assert {r["schema"] for r in old} == {"segcap.composition/1"} and all("scenes" not in r for r in old)
    new = extract(disc_scene(), TABLE, image="airport_1.jpg", scenes=SCENES)
    assert list(new)[:5] == ["schema", "image", "width", "height", "scenes"] and new["scenes"] == SCENES
    assert read_jsonl(write_jsonl(tmp_path / "c.jsonl", [*old, new])) == [*old, new]  # both versions in one file
    assert extract(disc_scene(), TABLE, scenes=None) == extract(disc_scene(), TABLE)  # no head: no field
    with pytest.raises(DataError, match="has no scenes; write it as segcap.composition/2"):
        validate({**old[0], "scenes": SCENES})


@pytest.mark.parametrize("scenes, match", [
    ([], "non-empty"),
    ([{"name": f"s{i}", "probability": 0.1} for i in range(6)], "too long"),
    ([{"name": "", "probability": 0.5}], "non-empty"),
    ([{"name": "airplane", "probability": 1.2}], "greater than the maximum of 1"),
    ([{"name": "airplane", "probability": 0.9, "rank": 1}], "Additional properties"),
    ([{"name": "runway", "probability": 0.1}, {"name": "airplane", "probability": 0.8}], "not sorted"),
    ([{"name": "airplane", "probability": 0.5}, {"name": "airplane", "probability": 0.4}], "repeated names"),
    ([{"name": "airplane", "probability": 0.8}, {"name": "runway", "probability": 0.7}], "sum to 1.500"),
])
def test_bad_scenes_are_named(scenes, match):
    record = {**extract(disc_scene(), TABLE), "scenes": scenes}
    found = problems(record)
    assert found and all(f.startswith("scenes") for f in found) and any(match in f for f in found), found
    with pytest.raises(DataError, match="bad scenes"):
        extract(disc_scene(), TABLE, image="x.jpg", scenes=scenes)


def test_with_scenes_rounds_and_keeps_the_record():
    r = extract(disc_scene(), TABLE)
    out = with_scenes(r, [{"name": "pond", "probability": 0.93149}, {"name": "river", "probability": 0.0004}])
    assert out["scenes"] == [{"name": "pond", "probability": 0.931}, {"name": "river", "probability": 0.0}]
    assert {k: v for k, v in out.items() if k != "scenes"} == r and "scenes" not in r and not problems(out)


# ----------------------------------------------------------------------------------- text, features
def test_prompt_is_deterministic_short_and_word_based():
    for scene in (disc_scene, road_scene, nested_scene):
        r = extract(scene(), TABLE)
        text = to_prompt(r)
        assert text == to_prompt(json.loads(json.dumps(r)))
        assert len(text.split()) < 60 and "{" not in text and "." not in text
    assert to_prompt(extract(road_scene(), TABLE)).startswith("vegetation ")
    assert "2 regions" in to_prompt(extract(road_scene(), TABLE))
    assert PROMPT_VERSION == "segcap.composition/1+prompt/1"  # scene-less texts did not change with schema /2


def test_prompt_without_scenes_is_as_before_scenes():
    """The texts of the LLM fixture's records (/1) as they were before scenes existed, byte for byte; a /2 copy reads
    the same."""
    records = read_jsonl(LLM_COMPOSITIONS)
    assert [to_prompt(r) for r in records[:4]] == [
        "vegetation 70% center, 2 regions; water 30% center, 1 region, compact; water surrounded by vegetation",
        "artificial surface 80% center, 1 region; vehicles 12% center, 9 regions; vegetation 8% top right, 1 region, "
        "compact; vehicles on artificial surface; vegetation above right of artificial surface",
        "vegetation 65% center, 3 regions; water 35% center, 1 region, compact; water surrounded by vegetation",
        "vegetation 92% center, 1 region; natural surface 8% bottom left, 1 region, long; natural surface below left "
        "of vegetation",
    ]
    for r in records:
        assert to_prompt(r) == to_prompt({**r, "schema": SCHEMA_ID}) == composition_text(r)
        assert scene_line(r) == "" and split_prompt(to_prompt(r)) == ("", to_prompt(r))


def test_prompt_with_scenes_starts_with_the_scene_line():
    r = extract(disc_scene(), TABLE, scenes=SCENES)
    assert to_prompt(r) == ("scene: airplane 93%, runway 4%, freeway 1%\n"
                            "vegetation 89% center, 1 region; water 11% center, 1 region, compact; "
                            "water surrounded by vegetation")
    assert split_prompt(to_prompt(r)) == (scene_line(r), composition_text(r))
    # under 1% after rounding: left out, except the first scene, always said
    faint = [{"name": "airplane", "probability": 0.6}, {"name": "runway", "probability": 0.005},
             {"name": "freeway", "probability": 0.0049}]
    assert scene_line({"scenes": faint}) == "scene: airplane 60%, runway 1%"
    assert scene_line({"scenes": [{"name": "airplane", "probability": 0.003}]}) == "scene: airplane <1%"
    assert to_prompt(r) == to_prompt(json.loads(json.dumps(r)))


def test_prompt_shape_words():
    m = np.full((40, 40), VEGETATION, np.uint8)
    m[17:23, :] = WATER
    assert "water 15% center, 1 region, long" in to_prompt(extract(m, TABLE))
    m2 = np.full((8, 8), VEGETATION, np.uint8)
    m2[0, 0] = WATER
    assert "water 2% top left, 1 region, compact" in to_prompt(extract(m2, TABLE))


def test_features_vector():
    r = extract(disc_scene(), TABLE)
    v = vector(r, TABLE.num_classes).reshape(TABLE.num_classes, len(PER_CLASS))
    assert v.shape == (10, 6) and v.dtype == np.float32
    assert not v[[0, 1, 2, 5, 6, 7, 8, 9]].any()  # absent classes are zeros
    water = by_name(r)["water"]
    assert v[WATER, 0] == pytest.approx(water["percent"] / 100)
    assert v[WATER, 1] == pytest.approx(math.log(2))
    assert v[WATER, 2:4] == pytest.approx(water["centroid"], abs=1e-6)
    with pytest.raises(DataError, match="another class table"):
        vector(r, 3)


def test_scene_vector():
    plain = extract(disc_scene(), TABLE)
    r = with_scenes(plain, SCENES)
    names = scene_names([plain, r, with_scenes(plain, [{"name": "beach", "probability": 1.0}])])
    assert names == ["airplane", "beach", "freeway", "runway"]
    assert scene_vector(r, names).tolist() == pytest.approx([0.931, 0.0, 0.01, 0.041])
    assert not scene_vector(plain, names).any() and scene_vector(r, []).shape == (0,)
    assert vector(r, 10).tolist() == vector(plain, 10).tolist()  # the class features do not read scenes


def test_speed_bench_runs_and_checks_agreement():
    out = bench(sizes=(32, 48), n_masks=(3, 2), repeats=1)
    row = out["sizes"]["32"]["clean"]
    assert row["fast_masks_per_s"] > 0 and row["reference_masks_per_s"] > 0 and row["masks"] == 3
    assert set(out["sizes"]["48"]) == {"clean", "speckled"}


def test_boxes_ab_bench_times_both_ways_and_puts_the_bit_sets_back():
    out = boxes_ab(sizes=(32,), n_masks=(3,), passes=2)
    row = out["sizes"]["32"]["speckled"]
    assert row["bitset_masks_per_s"] > 0 and row["plain_masks_per_s"] > 0 and len(row["gain_percent_range"]) == 2
    assert extract_module.boxes is boxes


# ---------------------------------------------------------------- health: the degenerate-set flags
def degenerate_records(n=40, size=40):
    """The seed's failure: artificial surface ~96% everywhere, a small patch of something at a random place."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        m = np.full((size, size), ARTIFICIAL, np.uint8)
        y, x = rng.integers(0, size - 8, 2)
        m[y : y + 8, x : x + 8] = (VEHICLES, BUILDING, VEGETATION)[i % 3]
        records.append(extract(m, TABLE, image=f"tile_{i}.jpg"))
    return records


def varied_records(n=40, size=40):
    """Scenes of a few rectangles of random classes over a random background class."""
    rng = np.random.default_rng(1)
    records = []
    for i in range(n):
        m = np.full((size, size), rng.integers(1, 6), np.uint8)
        for _ in range(rng.integers(2, 5)):
            h, w = rng.integers(6, 30, 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            m[y : y + h, x : x + w] = rng.integers(1, 10)
        records.append(extract(m, TABLE, image=f"scene_{i}.jpg"))
    return records


def test_health_flags_a_degenerate_set():
    records = degenerate_records()
    h = health(records)
    assert all(r["classes"][0]["name"] == "artificial surface" and r["classes"][0]["percent"] == 96.0 for r in records)
    assert h["distinct prompts"] > 20  # the prompts differ (where the patch is), as the seed's 266 did ...
    assert h["class >= 75%"] == "artificial surface (100%)"  # ... but one class covers almost every image
    assert h["distinct class orders"] == 3 and h["effective class orders"] == pytest.approx(3.0, abs=0.01)
    assert len(h["flags"]) == 2
    assert h["flags"][0].startswith("one class dominant: artificial surface covers >= 75% of the image in 100%")
    assert h["flags"][1].startswith("few class orders: 3.0 effective, 3 distinct, for 40 images")
    assert flags_text(h) == "; ".join(h["flags"])


def test_health_does_not_flag_a_varied_set():
    h = health(varied_records())
    assert h["flags"] == [] and flags_text(h) == "no flags"
    assert h["effective class orders"] >= FEW_ORDERS and h["distinct class orders"] > 20


def test_health_judges_only_enough_images_and_ignores_stray_pixels():
    few = health(degenerate_records(MIN_IMAGES - 1))
    assert few["flags"] == [] and flags_text(few) == f"not judged (fewer than {MIN_IMAGES} images)"
    assert len(health(degenerate_records(MIN_IMAGES))["flags"]) == 2
    assert flags_text(health([])) == "no compositions"
    m = np.full((40, 40), VEGETATION, np.uint8)
    m[:10, :10] = WATER  # 6.2%
    m[39, 39] = VEHICLES  # one pixel: 0.1%, not part of the order
    assert class_order(extract(m, TABLE)) == ("vegetation", "water")
