"""Scoring: the published nlg-eval anchor, a hand-checked BLEU-1, agreement with pycocoevalcap called directly,
per-category split, several systems, the human ceiling, the CLI end to end.

METEOR's JVM takes ~10 s to load its paraphrase table, so the scoring tests share one :class:`CocoScorer`
(one JVM) and only the end-to-end CLI test starts its own.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

import evaluation.metrics as em
from aerialdata.captionset import CaptionDataset
from evaluation.metrics import CocoScorer, human_ceiling, human_rounds, ptb_tokenize, score_captions
from evaluation.score import main
from segcap.cli import run

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "evaluation"
ANCHOR = HERE / "data" / "evaluation_anchor"
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="METEOR and the PTB tokenizer need Java")


@pytest.fixture(scope="module")
def scorer():
    if shutil.which("java") is None:
        pytest.skip("METEOR and the PTB tokenizer need Java (apt-get install default-jre-headless)")
    with CocoScorer() as s:
        yield s


@pytest.fixture(scope="module")
def refs() -> dict[str, list[str]]:
    return CaptionDataset(DATA / "dataset_rsicd.json", split="test").references()


def _preds(name: str) -> dict[str, str]:
    return {p["image_id"]: p["caption"] for p in json.loads((DATA / name).read_text())}


def test_nlg_eval_anchor(scorer):
    """All seven published nlg-eval numbers, to 6 decimals (no PTB tokenization, as nlg-eval scores them)."""
    lines = {n: (ANCHOR / f"{n}.txt").read_text().splitlines() for n in ("hyp", "ref1", "ref2")}
    preds = {str(i): h for i, h in enumerate(lines["hyp"])}
    refs = {str(i): [a, b] for i, (a, b) in enumerate(zip(lines["ref1"], lines["ref2"], strict=True))}
    expected = json.loads((ANCHOR / "expected.json").read_text())
    got = scorer.score(preds, refs, tokenize=False)
    assert list(got) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
    for key, value in got.items():
        assert value == pytest.approx(expected[key], abs=1e-6), key


def test_bleu1_by_hand():
    """BLEU-1 is corpus-level: clipped unigram matches over all hypotheses, times one brevity penalty.

    image a: hyp "the cat sat on the mat" (6 words), ref "the cat is on the mat" (6 words):
        matches the x2 (ref has two), cat, on, mat = 5 of 6 ("sat" misses)
    image b: hyp "the cat" (2 words), ref "the cat is on the mat" (6 words): matches 2 of 2
    corpus: precision 7/8, hypothesis length c = 8, closest reference lengths r = 6 + 6 = 12,
        brevity penalty exp(1 - r/c) = exp(1 - 12/8) = exp(-0.5) = 0.606531
        BLEU-1 = 7/8 * 0.606531 = 0.530715
    image a alone: 5/6 = 0.833333, no penalty (c = r = 6).
    """
    ref = ["the cat is on the mat"]
    both = score_captions({"a": "the cat sat on the mat", "b": "the cat"}, {"a": ref, "b": ref}, False, ("bleu",))
    assert both["Bleu_1"] == pytest.approx(7 / 8 * math.exp(-0.5), abs=1e-6)
    assert both["Bleu_1"] == pytest.approx(0.530715, abs=1e-6)
    alone = score_captions({"a": "the cat sat on the mat"}, {"a": ref}, tokenize=False, metrics=("bleu",))
    assert alone["Bleu_1"] == pytest.approx(5 / 6, abs=1e-6)
    assert set(alone) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"}


def test_same_as_pycocoevalcap_called_directly(scorer, refs):
    """Our tokenizer pass and scorer session give exactly what COCOEvalCap's steps give on the fixture."""


    preds = _preds("sys_a.json")
    ours = scorer.score(preds, refs)
    if not os.access(em._package_dir() / "tokenizer", os.W_OK):
        pytest.skip("pycocoevalcap's PTBTokenizer needs a writable site-packages (the reason for ptb_tokenize)")
    # COCOEvalCap.evaluate: tokenize references and results separately, then each scorer on the same dicts
    tok = PTBTokenizer()
    gts = tok.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    res = tok.tokenize({k: [{"caption": preds[k]}] for k in refs})
    flat_refs = [c for v in refs.values() for c in v]
    assert ptb_tokenize(flat_refs) == [c for k in refs for c in gts[k]]
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    # pycocoevalcap's own Meteor object (the session's JVM, so the test starts one JVM less)
    meteor, _ = scorer.meteor.compute_score(gts, res)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    direct = dict(zip(["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"], bleu, strict=True))
    direct.update(METEOR=meteor, ROUGE_L=rouge, CIDEr=cider)
    assert ours == {k: float(v) for k, v in direct.items()}
    assert ours["CIDEr"] > 1.0  # a real, non-degenerate case


def test_human_rounds_leave_one_out(refs):
    rounds = human_rounds(refs)
    assert len(rounds) == 5
    for k, (preds, rest) in enumerate(rounds):
        for img, hyp in preds.items():
            assert hyp == refs[img][k]
            assert rest[img] == refs[img][:k] + refs[img][k + 1 :]
    assert "airport_3.jpg" in rounds[3][0] and "airport_3.jpg" not in rounds[4][0]  # it has 4 references


def test_human_ceiling_identical_references(scorer, refs):
    """Both park images have 5 identical references with different words: every round matches exactly, so
    BLEU-1..4 = 1, ROUGE-L = 1, and CIDEr = 10 (identical TF-IDF vectors: cosine 1 for n = 1..4, times 10)."""
    park = {k: v for k, v in refs.items() if k.startswith("park_")}
    h = human_ceiling(park, scorer=scorer)
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L"):
        assert h[key] == pytest.approx(1.0, abs=1e-6), key
    assert h["CIDEr"] == pytest.approx(10.0, abs=1e-6)
    # the varied ponds agree far less with each other
    ponds = human_ceiling({k: v for k, v in refs.items() if k.startswith("pond_")}, scorer=scorer)
    assert ponds["Bleu_4"] < 0.5 and ponds["CIDEr"] < 2.0


@needs_java
def test_cli_two_systems_per_category_human(scorer, refs, tmp_path, capsys):
    """End to end with its own JVM: columns per system + human, per-category rows, files written, no overwrite."""
    out = tmp_path / "scores"
    args = [
        "--predictions", str(DATA / "sys_a.json"), str(DATA / "sys_b.json"),
        "--references", str(DATA / "dataset_rsicd.json"), "--split", "test",
        "--out", str(out), "--human", "--spice",
    ]  # fmt: skip
    run(main, args)
    scores = json.loads((out / "scores.json").read_text())
    assert scores["systems"] == ["sys_a", "sys_b", "human"]
    assert scores["metadata"]["split"] == "test" and scores["metadata"]["images"] == 8
    assert scores["metadata"]["refs_per_image"] == {"min": 4, "max": 5, "mean": 4.875}
    assert scores["metadata"]["scorers"]["pycocoevalcap"] == "1.2"
    assert scores["metadata"]["spice"] == "ok" or scores["metadata"]["spice"].startswith("unavailable: ")
    assert {c: e["images"] for c, e in scores["per_category"].items()} == {"airport": 3, "park": 2, "pond": 3}

    # every cell equals scoring that subset alone (same JVM-independent numbers from the shared session)
    a, b = _preds("sys_a.json"), _preds("sys_b.json")
    cats = {"overall": list(refs)} | {c: [k for k in refs if k.startswith(c + "_")] for c in ("airport", "park", "pond")}
    jobs = [({k: p[k] for k in ids}, {k: refs[k] for k in ids}) for p in (a, b) for ids in cats.values()]
    expected = scorer.score_many(jobs)
    for j, (name, cat) in enumerate((n, c) for n in ("sys_a", "sys_b") for c in cats):
        got = scores["overall"][name] if cat == "overall" else scores["per_category"][cat]["scores"][name]
        assert got == pytest.approx(expected[j], abs=1e-12), (name, cat)
    assert scores["per_category"]["park"]["scores"]["human"]["CIDEr"] == pytest.approx(10.0, abs=1e-6)
    assert scores["overall"]["sys_a"]["CIDEr"] > scores["overall"]["sys_b"]["CIDEr"]

    md = (out / "scores.md").read_text()
    assert "| metric | sys_a | sys_b | human |" in md
    assert "| park | 2 |" in md and "### pond (3 images)" in md
    assert f"| CIDEr | **{scores['overall']['sys_a']['CIDEr']:.4f}** |" in md
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| metric | sys_a | sys_b | human |" in capsys.readouterr().out

    # a second run into the same folder refuses to replace the scores
    with pytest.raises(SystemExit) as e:
        run(main, args)
    assert e.value.code == 2
    assert "already exists" in capsys.readouterr().err


class _Borrowed:
    """The shared scorer, lent to the CLI without being closed by it."""

    def __init__(self, scorer):
        self._scorer = scorer

    def __getattr__(self, name):
        return getattr(self._scorer, name)

    def close(self):
        pass


def test_cli_one_category(scorer, refs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("evaluation.report.CocoScorer", lambda metrics, tokenize=True: _Borrowed(scorer))
    out = tmp_path / "parks"
    base = ["--predictions", str(DATA / "sys_a.json"), "--references", str(DATA), "--out", str(out)]
    run(main, base + ["--category", "park", "--names", "llm"])
    scores = json.loads((out / "scores.json").read_text())
    park = [k for k in refs if k.startswith("park_")]
    a = _preds("sys_a.json")
    assert scores["metadata"]["images"] == 2 and scores["metadata"]["category"] == "park"
    assert scores["per_category"] == {}
    assert scores["overall"]["llm"] == pytest.approx(scorer.score({k: a[k] for k in park}, {k: refs[k] for k in park}))
    assert "category **park** only" in (out / "scores.md").read_text()

    with pytest.raises(SystemExit) as e:
        run(main, base + ["--category", "harbour", "--overwrite"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "harbour" in err and "airport, park, pond" in err


def test_cli_coco_references_and_numeric_ids(scorer, refs, tmp_path, monkeypatch, capsys):
    """COCO caption references with results keyed by images[].id, as COCO-style tools write them, score exactly like
    the same captions keyed by filename; Karpathy imgids as well. The log holds lines, not bar redraws."""
    monkeypatch.setattr("evaluation.report.CocoScorer", lambda metrics, tokenize=True: _Borrowed(scorer))
    expected = scorer.score(_preds("sys_a.json"), refs)
    common = ["--split", "test", "--no-per-category"]
    run(main, ["--predictions", str(DATA / "sys_a_coco_ids.json"), str(DATA / "sys_a.json"), "--names", "ids", "names",
               "--references", str(DATA / "captions_coco.json"), "--out", str(tmp_path / "coco"), *common])
    coco = json.loads((tmp_path / "coco" / "scores.json").read_text())
    assert coco["metadata"]["images"] == 8
    assert coco["overall"]["ids"] == coco["overall"]["names"] == pytest.approx(expected, abs=1e-12)
    run(main, ["--predictions", str(DATA / "sys_a_imgids.json"), "--references", str(DATA / "dataset_rsicd.json"),
               "--out", str(tmp_path / "karpathy"), *common])
    karpathy = json.loads((tmp_path / "karpathy" / "scores.json").read_text())
    assert karpathy["overall"]["sys_a_imgids"] == pytest.approx(expected, abs=1e-12)
    err = capsys.readouterr().err
    assert "\r" not in err and "scoring: 2/2 sets in " in err and "scoring: 1/1 set in " in err, err
    assert len(err.splitlines()) <= 10, err
