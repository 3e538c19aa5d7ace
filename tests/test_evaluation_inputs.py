"""Bad input to `python -m evaluation.score`: each case exits with code 2 and one clear message naming the file,
before any scoring (no Java is started), and writes nothing. Also: Java missing, SPICE without its jars."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import evaluation.metrics as em
from aerialdata.captionset import CaptionDataset
from evaluation.predictions import ImageIds, image_ids, read_predictions
from evaluation.score import main
from segcap.cli import parse, run
from segcap.errors import DataError

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "evaluation"
REFS = DATA / "dataset_rsicd.json"
COCO_REFS = DATA / "captions_coco.json"
RSICD_VAL = HERE.parents[1] / "shared" / "anchors" / "rsicd-captions" / "captions_val.json"  # real RSICD val, COCO format


def _good() -> list[dict]:
    return json.loads((DATA / "sys_a.json").read_text())


def _cli(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        run(main, args)
    assert e.value.code == 2
    return capsys.readouterr().err


CASES = {
    "dict": ({"park_1.jpg": "a park"}, ["expected COCO results JSON", "got a JSON dict", "image -> caption"]),
    "missing_key": ([{"image_id": p["image_id"]} for p in _good()], ["8 malformed entries", "lacks 'caption'"]),
    "not_in_split": (
        _good() + [{"image_id": "park_9.jpg", "caption": "a park"}],
        ["1 prediction(s) for images not in the test split", "park_9.jpg", "--split"],
    ),
    "missing_images": (_good()[3:], ["3 of the 8 images of the test split of the references have no prediction", "park_1.jpg, park_2.jpg, pond_1.jpg"]),
    "duplicate": (_good() + [_good()[0]], ["1 duplicate image_id(s) (park_1.jpg)"]),
    "empty_caption": ([dict(p, caption="  ") if i == 2 else p for i, p in enumerate(_good())], ["1 empty caption(s) (pond_1.jpg)"]),
    "stem_ids": ([dict(p, image_id=Path(p["image_id"]).stem) for p in _good()], ["image_id must be the full filename"]),
    # numeric ids: imgid of the Karpathy JSON (park_1.jpg is 0, ..., airport_3.jpg 7, park_9.jpg 8)
    "unknown_numeric_id": (
        _good() + [{"image_id": 999, "caption": "a park"}],
        ["1 numeric image_id(s) match no image (999)", f"image ids of {REFS}", "write the image filenames"],
    ),
    "numeric_not_in_split": (
        _good() + [{"image_id": 8, "caption": "a park"}],
        ["1 prediction(s) for images not in the test split of the references (park_9.jpg (image_id 8))", "--split"],
    ),
    "numeric_duplicate": (_good() + [{"image_id": 0, "caption": "a park"}], ["1 duplicate image_id(s) (park_1.jpg (image_id 0))"]),
    "quoted_numbers": (
        [dict(p, image_id=str(i)) for i, p in enumerate(_good())],
        ['a quoted number is read as a filename', 'write numeric image ids as JSON numbers: 0, not "0"'],
    ),
    "float_id": ([dict(p, image_id=1.0) if i == 1 else p for i, p in enumerate(_good())], ["entry 1 has image_id 1.0", "numeric id (an integer)"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_predictions(case, tmp_path, capsys):
    content, expected = CASES[case]
    bad = tmp_path / f"{case}.json"
    bad.write_text(json.dumps(content))
    out = tmp_path / "out"
    err = _cli(["--predictions", str(bad), "--references", str(REFS), "--out", str(out)], capsys)
    assert err.startswith(f"error: {bad}: ")
    for text in expected:
        assert text in err, (text, err)
    assert not out.exists()


def test_not_json_and_missing_file(tmp_path, capsys):
    bad = tmp_path / "preds.json"
    bad.write_text("[{'image_id': 'park_1.jpg'}]")
    err = _cli(["--predictions", str(bad), "--references", str(REFS), "--out", str(tmp_path / "o")], capsys)
    assert "not valid JSON" in err and str(bad) in err
    err = _cli(["--predictions", str(tmp_path / "nope.json"), "--references", str(REFS), "--out", str(tmp_path / "o")], capsys)
    assert "predictions file not found" in err and "nope.json" in err


def test_several_problems_reported_together(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps(_good()[1:] + [_good()[1], {"image_id": "x.jpg", "caption": ""}]))
    refs = CaptionDataset(REFS, split="test").references()
    with pytest.raises(Exception) as e:
        read_predictions(bad, refs, "test")
    msg = str(e.value)
    assert msg.startswith(f"{bad}: 4 problems:")
    for text in ("duplicate image_id", "empty caption", "not in the test split", "have no prediction (park_1.jpg)"):
        assert text in msg


def test_read_predictions_follows_reference_order(tmp_path):
    refs = CaptionDataset(REFS, split="test").references()
    path = tmp_path / "p.json"
    path.write_text(json.dumps([dict(p, caption=p["caption"] + "  ") for p in reversed(_good())]))
    preds = read_predictions(path, refs)
    assert list(preds) == list(refs)
    assert preds["park_1.jpg"] == "Many green trees are around a playground in a park."


def test_numeric_image_ids_coco_and_karpathy():
    """COCO results with numeric image_id read like filenames: COCO images[].id, Karpathy imgid; any order."""
    by_name = read_predictions(DATA / "sys_a.json", CaptionDataset(REFS, split="test").references(), "test")
    coco_refs = CaptionDataset(COCO_REFS, split="test").references()
    assert list(coco_refs) == list(by_name)
    from_coco = read_predictions(DATA / "sys_a_coco_ids.json", coco_refs, "test", references=COCO_REFS)
    assert list(from_coco.items()) == list(by_name.items())
    from_imgid = read_predictions(DATA / "sys_a_imgids.json", coco_refs, "test", references=REFS)
    assert list(from_imgid.items()) == list(by_name.items())
    ids = image_ids(COCO_REFS)
    assert ids.by_id[9049] == "park_1.jpg" and ids.by_id[9000] == "airport_3.jpg" and ids.ambiguous is None
    assert image_ids(REFS).by_id == {i: n for i, n in enumerate(CaptionDataset(REFS).references())}
    # a computed ImageIds serves several files; without references a numeric id cannot be looked up
    assert read_predictions(DATA / "sys_a_coco_ids.json", coco_refs, references=ids) == by_name
    with pytest.raises(DataError, match=r"8 numeric image_id\(s\) \(9000, 9007, .*no references file.*pass references="):
        read_predictions(DATA / "sys_a_coco_ids.json", coco_refs)
    # the COCO ids of one file are not the imgids of the other
    with pytest.raises(DataError, match=r"8 numeric image_id\(s\) match no image \(9000, 9007, 9014, 9021, 9028, \.\.\. \(3 more\)\)"):
        read_predictions(DATA / "sys_a_coco_ids.json", coco_refs, references=REFS)


def test_numeric_ids_refused_where_imgids_repeat(tmp_path, capsys):
    """Karpathy JSON whose imgids repeat (some converted sets number each split from 0): numeric ids are refused,
    naming an id that names two images; filenames still work."""
    raw = json.loads(REFS.read_text())
    raw["images"][8]["imgid"] = 0  # park_9.jpg (train) takes park_1.jpg's imgid
    refs_path = tmp_path / "dataset_rsicd.json"
    refs_path.write_text(json.dumps(raw))
    assert image_ids(refs_path) == ImageIds({}, image_ids(refs_path).source, "1 id(s) name several images (id 0: park_1.jpg, park_9.jpg)")
    args = ["--references", str(refs_path), "--out", str(tmp_path / "o")]
    err = _cli(args + ["--predictions", str(DATA / "sys_a_imgids.json")], capsys)
    assert err.startswith(f"error: {DATA / 'sys_a_imgids.json'}: 2 problems:\n  - 8 numeric image_id(s) (0, 1, 2, 3, 4, "
                          "... (3 more)) cannot be mapped to images: 1 id(s) name several images (id 0: park_1.jpg, "
                          "park_9.jpg)")
    assert "write the image filenames as image_id" in err and str(refs_path) in err
    refs = CaptionDataset(refs_path, split="test").references()
    assert read_predictions(DATA / "sys_a.json", refs, references=refs_path) == read_predictions(DATA / "sys_a.json", refs)


@pytest.mark.skipif(not RSICD_VAL.is_file(), reason="the RSICD val anchor lives in the project's shared/ folder")
def test_numeric_ids_on_real_rsicd_val_annotations(tmp_path):
    """RSICD val in COCO caption format (1092 images): results keyed by images[].id read as the same filenames."""
    raw = json.loads(RSICD_VAL.read_text())
    refs = CaptionDataset(RSICD_VAL, split="val").references()
    assert len(refs) == len(raw["images"]) == 1092
    results = [{"image_id": im["id"], "caption": f"caption of {im['file_name']}"} for im in raw["images"]]
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results[::-1]))
    preds = read_predictions(path, refs, "val", references=RSICD_VAL)
    assert list(preds) == list(refs) and all(c == f"caption of {n}" for n, c in preds.items())
    path.write_text(json.dumps(results + [{"image_id": max(im["id"] for im in raw["images"]) + 1, "caption": "x"}]))
    with pytest.raises(DataError, match=r"1 numeric image_id\(s\) match no image \(\d+\)"):
        read_predictions(path, refs, "val", references=RSICD_VAL)


def test_options(tmp_path, capsys):
    args = ["--references", str(REFS), "--out", str(tmp_path / "o")]
    assert "nothing to score" in _cli(args, capsys)
    two = ["--predictions", str(DATA / "sys_a.json"), str(DATA / "sys_b.json")]
    assert "--names gives 1 name(s) for 2" in _cli(args + two + ["--names", "x"], capsys)
    assert "'human' is the human-ceiling column" in _cli(args + two + ["--names", "x", "human", "--human"], capsys)
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "scores.md").write_text("mine")
    assert "already exists" in _cli(args + two, capsys)
    assert (tmp_path / "o" / "scores.md").read_text() == "mine"


def test_subprocess_exit_code(tmp_path):
    bad = tmp_path / "dict.json"
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    cmd = [sys.executable, "-m", "evaluation.score", "--predictions", str(bad), "--references", str(REFS), "--out", str(tmp_path / "o")]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "COCO annotation file (references), not results" in r.stderr


def test_java_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(em.shutil, "which", lambda name, *a, **k: None)
    out = tmp_path / "o"
    err = _cli(["--predictions", str(DATA / "sys_a.json"), "--references", str(REFS), "--out", str(out)], capsys)
    assert "Java was not found" in err and "apt-get install default-jre-headless" in err
    assert err.count("\n") == 1 and not out.exists()
    with pytest.raises(em.JavaNotFoundError):
        em.CocoScorer()
    # the pure-Python scorers need no Java
    assert em.score_captions({"a": "a b c d"}, {"a": ["a b c d"]}, tokenize=False, metrics=("bleu", "rouge"))["ROUGE_L"] == 1.0


def test_spice_unavailable_reason(tmp_path, monkeypatch):
    (tmp_path / "spice" / "lib").mkdir(parents=True)
    monkeypatch.setattr(em, "_package_dir", lambda: tmp_path)
    reason = em.spice_unavailable_reason()
    assert "stanford-corenlp-3.6.0.jar" in reason and str(tmp_path / "spice" / "lib") in reason
    monkeypatch.setattr(em.shutil, "which", lambda name, *a, **k: None)
    assert "Java is not installed" in em.spice_unavailable_reason()


def test_unknown_metric():
    with pytest.raises(Exception, match="unknown metric"):
        em.CocoScorer(metrics=("bleu", "wer"), tokenize=False)


def test_config_file_parses():

    cfg = HERE.parent / "configs" / "evaluation.yaml"
    kwargs = parse(main, ["--config", str(cfg), "--predictions", "p.json", "--out", "o"])
    assert kwargs["split"] == "test" and kwargs["human"] is True and kwargs["spice"] is False
    assert kwargs["references"] == Path("data/synthetic/rsicd/dataset_rsicd.json")
