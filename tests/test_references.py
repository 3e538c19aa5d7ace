"""The references without a chain (issue 23): class_oracle, image_nearest, and the per-class table of the report.

The caption set is made here, in tmp_path: a Karpathy JSON under a name other than RSICD's, its images in ``imgs/``
(UCM's folder name), two categories; the test image ``pond_4.png`` is a pixel copy of the training image
``forest_2.png``, so the class lookup and the image lookup must disagree on it.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from aerialdata.captionset import CaptionDataset, CaptionImage
from captioners.cnn_lstm import CnnLstm, CnnLstmOptions
from captioners.nearest import ImageEncoder, image_nearest, nearest_images
from evaluation.metrics import CocoScorer
from pipeline import run as prun
from pipeline.baselines import (
    NearestNeighbour,
    categories_summary,
    class_oracle,
    most_frequent,
    neighbour_caption,
)
from pipeline.executor import run_stage
from pipeline.report import per_class_md, ratios
from pipeline.stages import STAGES
from pipeline.stages.base import hashed
from pipeline.systems import SYSTEMS, notes
from segmentation.model import CONFIG_FORMAT

JSON, IMAGES = "dataset_tiny.json", "imgs"
SIZE = 32
# (filename, split, captions); pond's two most frequent captions tie at 2 (case and spaces aside)
ITEMS = [
    ("pond_1.png", "train", ["a pond in the grass .", "pond near trees .", "a blue pond .", "water .", "a pond ."]),
    ("pond_2.png", "train", ["A pond  in the grass .", "pond near trees .", "the pond .", "a lake .", "wet ."]),
    ("pond_3.png", "train", ["still water .", "a round pond .", "a pool .", "blue water .", "some water ."]),
    ("forest_1.png", "train", ["many trees .", "a dense forest .", "green trees .", "a forest .", "trees ."]),
    ("forest_2.png", "train", ["a dense forest .", "dark trees here .", "a forest of pines .", "woods .", "pines ."]),
    ("forest_3.png", "train", ["a dense forest .", "tall trees .", "a forest .", "leaves .", "green ."]),
    ("pond_4.png", "test", ["a pond in the grass .", "a pond .", "water .", "blue .", "a lake ."]),
    ("forest_4.png", "test", ["a dense forest .", "many trees .", "a forest .", "trees .", "green ."]),
]
COPIED = {"pond_4.png": "forest_2.png"}  # test image -> the training image it copies


def _record(image: str) -> dict:
    return {"schema": "segcap.composition/1", "image": image, "width": SIZE, "height": SIZE,
            "classes": [{"id": 0, "name": "unlabeled", "percent": 100.0, "center": [0.5, 0.5], "radius": 0.7,
                         "centroid": [0.5, 0.5], "regions": 1, "largest_region_percent": 100.0,
                         "bbox": [0.0, 0.0, 1.0, 1.0], "elongation": 1.0, "position": "center"}],
            "relations": []}


@pytest.fixture
def caption_set(tmp_path) -> Path:
    """The tiny caption set (module docstring) under tmp_path/set."""
    root = tmp_path / "set"
    (root / IMAGES).mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = {}
    for name, _, _ in ITEMS:
        pixels[name] = pixels[COPIED[name]] if name in COPIED else rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8)
        cv2.imwrite(str(root / IMAGES / name), pixels[name])
    images = [{"filename": name, "imgid": i, "split": split,
               "sentences": [{"raw": c, "tokens": c.split(), "imgid": i, "sentid": 5 * i + j} for j, c in enumerate(caps)],
               "sentids": list(range(5 * i, 5 * i + 5))} for i, (name, split, caps) in enumerate(ITEMS)]
    (root / JSON).write_text(json.dumps({"images": images, "dataset": "tiny"}))
    return root


def _split(root: Path, split: str) -> CaptionDataset:
    return CaptionDataset(root / JSON, split=split, images_dir=IMAGES)


def _item(name: str, category: str, split: str = "train", captions: list[str] | None = None) -> CaptionImage:
    return CaptionImage(name, 0, split, captions or [f"{category} caption ."], category)


# ---------------------------------------------------------------- class_oracle
def test_class_oracle_says_the_true_class_most_frequent_training_caption(caption_set):
    train, test = _split(caption_set, "train"), _split(caption_set, "test")
    assert [it.category for it in test] == ["pond", "forest"]
    # pond: "a pond in the grass ." and "pond near trees ." both twice: the lexicographically smaller one
    assert class_oracle(train, test) == ["a pond in the grass .", "a dense forest ."]
    assert most_frequent(["b .", "a .", "B  .", "a ."]) == "a ."  # tie at 2: the smaller, case and spaces aside
    # a class without training images gets the most frequent training caption of all
    assert class_oracle(train, [_item("beach_1.png", "beach", "test")]) == ["a dense forest ."]
    summary = categories_summary(list(train), list(test))
    assert summary["categories"] == 2 and summary["degenerate"] is None


def test_class_oracle_says_what_it_is_when_categories_mean_nothing():
    unknown = [_item(f"{i:05d}.png", "unknown") for i in range(3)]
    assert "no categories" in categories_summary(unknown, unknown[:1])["degenerate"]
    one_each = [_item(f"{c}_1.png", c) for c in ("a", "b", "c")]
    assert "no category has two training images" in categories_summary(one_each, one_each[:1])["degenerate"]
    assert class_oracle(one_each, [_item("b_9.png", "b", "test")]) == ["b caption ."]


def test_neighbour_caption_is_what_nearest_returns_with_one_neighbour():
    caps = ["a small pond near trees", "a pond near trees", "cars", "a pond near green trees"]
    record = _record("pond_1.png")
    nn = NearestNeighbour([record], [caps], 10)
    assert nn.caption([record], k=1) == [neighbour_caption(caps)] == ["a pond near trees"]


# ---------------------------------------------------------------- image_nearest
def test_image_nearest_finds_the_training_image_a_test_image_copies(caption_set):
    train, test = list(_split(caption_set, "train")), list(_split(caption_set, "test"))
    ds = _split(caption_set, "test")  # any split: the paths come from the root and images_dir
    options = {"encoder": "mobilenet_v2", "encoder_weights": None, "encoder_stride": 8, "image_size": SIZE,
               "seed": 0, "device": "cpu"}
    caps = image_nearest(ds, train, test, choose=neighbour_caption, **options)
    forest_2 = next(it for it in train if it.filename == "forest_2.png")
    assert caps[0] == neighbour_caption(forest_2.sentences)
    encoder = ImageEncoder(ds, train, **options)
    feats = encoder.features(train)
    assert feats.shape == (len(train), 32) and np.allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    assert encoder.weights_source == "random" and encoder.calibrated == len(train)
    assert nearest_images(feats, encoder.features(test[:1])).tolist() == [train.index(forest_2)]
    # the same random weights as the cnn_lstm captioner built with the same seed (captioners.train)
    torch.manual_seed(0)
    captioner = CnnLstm(CnnLstmOptions(encoder="mobilenet_v2", encoder_stride=8, image_size=SIZE), vocab_size=5)
    ours = dict(encoder.trunk.named_parameters())
    assert all(torch.equal(p, ours[k]) for k, p in captioner.trunk.named_parameters())


# ---------------------------------------------------------------- the report
def test_per_class_table_has_a_row_per_class_and_a_column_per_system():
    scores = {"systems": ["nearest", "class_oracle", "human"],
              "per_category": {"forest": {"images": 3, "scores": {"nearest": {"CIDEr": 0.5}, "class_oracle":
                                                                  {"CIDEr": 1.25}, "human": {"CIDEr": 2.0}}},
                               "pond": {"images": 2, "scores": {"nearest": {"CIDEr": 0.75}}}}}
    lines = per_class_md(scores)
    assert lines[0] == "| category | images | nearest | class_oracle | human |"
    assert lines[2] == "| forest | 3 | 0.50 | **1.25** | 2.00 |"
    assert lines[3] == "| pond | 2 | 0.75 | n/a | n/a |"  # one system only: nothing to bold
    assert per_class_md({"systems": ["nearest"], "per_category": {}}) == []
    tied = {"systems": ["a", "b"], "per_category": {"x": {"images": 1, "scores": {"a": {"CIDEr": 0}, "b": {"CIDEr": 0}}}}}
    assert per_class_md(tied)[2] == "| x | 1 | 0.00 | 0.00 |"
    assert {"class_oracle", "image_nearest"} <= set(SYSTEMS) and {"class_oracle", "image_nearest"} <= set(notes())
    lines = ratios({"overall": {"pipeline": {"CIDEr": 1.0}, "class_oracle": {"CIDEr": 2.0}, "nearest": {"CIDEr": 0.9},
                                "image_nearest": {"CIDEr": 0.6}, "cnn_lstm": {"CIDEr": 0.3}}})
    assert "best chain system (pipeline) CIDEr / class_oracle CIDEr = 0.50 (against the ceiling of a scene " \
           "classifier)" in lines
    assert any(x.startswith("nearest CIDEr / image_nearest CIDEr = 1.50") for x in lines)
    assert any(x.startswith("cnn_lstm CIDEr / image_nearest CIDEr = 0.50") for x in lines)



def test_references_pass_through_the_captions_score_and_report_stages(caption_set, tmp_path, monkeypatch, run_options):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.pt").write_bytes(b"weights")
    (ckpt / "config.yaml").write_text(f"format: {CONFIG_FORMAT}\nclasses: aerial10\n")
    (ckpt / "metrics.json").write_text("{}")
    run = prun.make_run(**run_options(captions_root=caption_set, captions_json=JSON, images_dir=IMAGES,
                                   generate=False, segmentation_checkpoint=ckpt,
                                   systems=("nearest", "class_oracle", "image_nearest")))
    lay = run.layout
    # what the compositions and masks stages would have left
    lay.predicted.parent.mkdir(parents=True)
    lay.predicted.write_text("".join(json.dumps(_record(name)) + "\n" for name, _, _ in ITEMS))
    lay.masks.mkdir()
    for name, _, _ in ITEMS:
        cv2.imwrite(str(lay.masks / f"{Path(name).stem}.png"), np.zeros((SIZE, SIZE), np.uint8))

    # the encoder options are the default cnn_lstm config's, and they are in the stage's fingerprint
    assert hashed(STAGES["captions"].options(run))["image_nearest"] == {
        "encoder": "mobilenet_v2", "encoder_weights": None, "encoder_stride": 8, "image_size": 128, "seed": 0}
    bigger = prun.make_run(**run_options(captions_root=caption_set, captions_json=JSON, images_dir=IMAGES,
                                      generate=False, segmentation_checkpoint=ckpt,
                                      systems=("class_oracle", "image_nearest", "cnn_lstm"),
                                      captioners={"cnn_lstm": {"image_size": 64}}))
    assert hashed(STAGES["captions"].options(bigger))["image_nearest"]["image_size"] == 64
    assert "image_nearest" not in hashed(STAGES["captions"].options(prun.make_run(**run_options())))

    result = run_stage(run, "captions")
    assert set(result["predictions"]) == {"nearest", "class_oracle", "image_nearest"}
    assert result["references"]["class_oracle"]["degenerate"] is None
    preds = {name: {p["image_id"]: p["caption"] for p in json.loads(Path(f).read_text())}
             for name, f in result["predictions"].items()}
    assert preds["class_oracle"] == {"pond_4.png": "a pond in the grass .", "forest_4.png": "a dense forest ."}
    assert preds["image_nearest"]["pond_4.png"] == neighbour_caption(ITEMS[4][2])  # forest_2's

    # scored as the pipeline scores, without METEOR (its JVM takes ~10 s to start; tests/test_evaluation.py has it)
    monkeypatch.setattr("evaluation.report.CocoScorer", lambda metrics, tokenize=True: CocoScorer(
        ("bleu", "rouge", "cider"), tokenize=tokenize))
    run_stage(run, "score")
    scores = json.loads(lay.scores_json.read_text())
    assert {"class_oracle", "image_nearest"} <= set(scores["systems"]) and set(scores["per_category"]) == {
        "forest", "pond"}
    lay.stamps.mkdir()
    lay.stamp("captions").write_text(json.dumps({"result": result}))
    report = Path(run_stage(run, "report")["report"]).read_text()
    assert "### CIDEr per class" in report and "| category | images | nearest | class_oracle | image_nearest |" in report
    assert "| class_oracle |" in report and notes()["image_nearest"] in report
    assert "## Composition health" in report and "## Examples" in report and lay.examples.is_file()
