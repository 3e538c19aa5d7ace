"""A new stage and a new system, added from this file alone, run through the pipeline's executor (issue 24).

The toy stage writes a caption to run_dir/toy; the toy system captions every test image with it. The real captions
and score stages make and score the toy system's captions; the stages that train models are stand-ins (they write
compositions only), so the test runs in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from composition.schema import write_jsonl
from evaluation.metrics import CocoScorer
from pipeline import run as prun
from pipeline.executor import fingerprint, names
from pipeline.stages import STAGES, Run, Stage, register
from pipeline.stages.base import hashed
from pipeline.systems import SYSTEMS, System, listed, notes
from pipeline.systems import register as register_system

TOY = {"caption": "a toy caption ."}  # the toy stage's one option, changed by a test
ITEMS = [("a_1.png", "train", ["a field .", "grass ."]), ("a_2.png", "train", ["a road .", "a street ."]),
         ("a_3.png", "test", ["a toy caption .", "a toy ."]), ("a_4.png", "test", ["a house .", "a home ."])]


@dataclass(frozen=True)
class ToyOptions:
    caption: str


def run_toy(run: Run, opts: ToyOptions, fresh: bool, commands: list[str]) -> dict:
    out = run.layout.run_dir / "toy"
    out.mkdir(parents=True, exist_ok=True)
    (out / "caption.txt").write_text(opts.caption)
    commands.append("echo toy")
    return {"caption": opts.caption}


def toy_captions(context) -> list[str]:
    caption = (context.run.layout.run_dir / "toy" / "caption.txt").read_text()
    return [caption] * len(context.test)


@pytest.fixture
def toy(monkeypatch, stage_bodies, tmp_path):
    """The toy stage (before captions) and the toy system in the tables for one test; every model-training stage a
    stand-in; a caption set of 4 images; METEOR left out of the scores (its JVM takes ~10 s to start)."""
    saved_stages, saved_systems = dict(STAGES), dict(SYSTEMS)
    register(Stage("toy", ("data",), lambda lay: [lay.run_dir / "toy"], lambda run: ToyOptions(TOY["caption"]),
                   run_toy), before="captions")
    register_system(System("toy_constant", toy_captions, "the toy stage's caption for every image", "reference",
                           reads="toy"))

    def write_compositions(run, fresh, commands):
        write_jsonl(run.layout.predicted, [_record(name) for name, _, _ in ITEMS])
        return {}

    stage_bodies({**{s: (lambda run, fresh, commands: {}) for s in STAGES if s not in ("toy", "captions", "score")},
                  "compositions": write_compositions})
    monkeypatch.setattr(prun, "input_problems", lambda run, stages=None: [])
    monkeypatch.setattr("evaluation.report.CocoScorer", lambda metrics, tokenize=True: CocoScorer(
        ("bleu", "rouge", "cider"), tokenize=tokenize))
    caps = tmp_path / "set"
    (caps / "imgs").mkdir(parents=True)
    for name, _, _ in ITEMS:
        (caps / "imgs" / name).write_bytes(np.zeros(4, np.uint8).tobytes())
    images = [{"filename": name, "imgid": i, "split": split,
               "sentences": [{"raw": c, "tokens": c.split(), "imgid": i, "sentid": 2 * i + j} for j, c in enumerate(caps)],
               "sentids": [2 * i, 2 * i + 1]} for i, (name, split, caps) in enumerate(ITEMS)]
    (caps / "dataset_toy.json").write_text(json.dumps({"images": images, "dataset": "toy"}))
    yield dict(run_dir=tmp_path / "run", captions_root=caps, generate=False, systems=("toy_constant",),
               progress=False)
    STAGES.clear()
    STAGES.update(saved_stages)
    SYSTEMS.clear()
    SYSTEMS.update(saved_systems)


def test_a_toy_stage_and_system_run_through_the_executor(toy):
    order = names()
    assert order.index("captioners") < order.index("toy") < order.index("captions")
    rows = prun.main(**toy)
    assert [r["status"] for r in rows] == ["ran"] * len(order)
    run_dir = toy["run_dir"]
    preds = json.loads((run_dir / "predictions" / "toy_constant.json").read_text())
    assert [p["caption"] for p in preds] == ["a toy caption ."] * 2
    scores = json.loads((run_dir / "scores" / "scores.json").read_text())
    assert list(scores["systems"]) == ["toy_constant", "human"] and scores["overall"]["toy_constant"]["Bleu_1"] > 0.4
    assert notes()["toy_constant"] == "the toy stage's caption for every image"
    assert json.loads((run_dir / "stages" / "toy.json").read_text())["commands"] == ["echo toy"]
    # the captions stage reads the toy stage (the system says so): its fingerprint holds the toy stage's digest
    assert "toy" in STAGES["captions"].reads()

    assert [r["status"] for r in prun.main(**toy)] == ["done before"] * len(order)
    TOY["caption"] = "a house ."
    try:
        rows = prun.main(**toy)
    finally:
        TOY["caption"] = "a toy caption ."
    assert [r["stage"] for r in rows if r["status"] == "ran"] == ["toy", "captions", "score", "report"]
    preds = json.loads((run_dir / "predictions" / "toy_constant.json").read_text())
    assert preds[0]["caption"] == "a house ."


def test_every_option_an_options_object_holds_is_in_the_fingerprint(toy):
    """The fingerprint hashes the options object whole: no list of options to keep by hand."""
    run = prun.make_run(**toy, data_root=Path("unused"))
    before = fingerprint(run, "toy")
    assert hashed(STAGES["toy"].options(run)) == {"caption": "a toy caption ."}
    TOY["caption"] = "another ."
    try:  # a run builds each stage's options once (Run.memo): the next run reads the changed value
        assert fingerprint(run, "toy") == before
        assert fingerprint(prun.make_run(**toy, data_root=Path("unused")), "toy") != before
    finally:
        TOY["caption"] = "a toy caption ."


def _record(image: str) -> dict:
    return {"schema": "segcap.composition/1", "image": image, "width": 4, "height": 4,
            "classes": [{"id": 0, "name": "unlabeled", "percent": 100.0, "center": [0.5, 0.5], "radius": 0.7,
                         "centroid": [0.5, 0.5], "regions": 1, "largest_region_percent": 100.0,
                         "bbox": [0.0, 0.0, 1.0, 1.0], "elongation": 1.0, "position": "center"}],
            "relations": []}



def test_the_stage_order_and_the_makefile_list_of_systems():
    """The stages run in this order (registration order, pinned here); `make demo-retrieval` runs this list."""
    assert names() == ("data", "segmentation", "scenes", "masks", "compositions", "llm", "oracle", "blind", "rag",
                       "rag_only", "scene_only", "composition_only", "captioners", "captions", "score", "report")
    assert listed(["--default", "--group", "retrieval"]).split() == [
        "pipeline", "pipeline_beam", "oracle", "blind", "template", "nearest", "nearest_consensus", "cnn_lstm",
        "pipeline_mbr", "pipeline_pool", "pipeline_rag", "pipeline_rag_mbr", "rag_only"]
    with pytest.raises(SystemExit):  # a misspelt group is refused, not read as "every system"
        listed(["--group", "retreival"])
