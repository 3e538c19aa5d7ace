"""Retrieval-augmented prompts and consensus decoding (issue 15): the composition index, the {neighbours} prompt line,
CIDEr-D consensus against pycocoevalcap, and a tiny fine-tune with retrieval end to end (index saved, never its own
neighbour, candidates, deterministic sampling, CLI checks)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocoevalcap.cider.cider_scorer import CiderScorer

from aerialdata.captionset import CaptionDataset
from composition.extract import with_scenes
from composition.schema import read_jsonl
from llm.consensus import NGRAM_FILE, CiderD, document_frequencies
from llm.examples import PromptTemplate, build_image_examples
from llm.finetune import main as finetune
from llm.generate import Captioner
from llm.generate import main as generate
from llm.retrieval import INDEX_FILE, CompositionIndex, consensus_order
from pipeline import caption
from pipeline.baselines import NearestNeighbour
from segcap.cli import run as run_cli
from segcap.errors import ConfigError, DataError
from tests.test_llm_train import FAST as LLM_FAST
from tests.test_llm_train import TINY as LLM_TINY
from tests.test_provenance import DRONE_IMAGES, checkpoints  # noqa: F401  (checkpoints: a fixture, used below)

HERE = Path(__file__).resolve().parent
FIX = HERE / "data" / "llm"
COMPOSITIONS = FIX / "compositions.jsonl"
CAPTIONS = FIX / "rsicd" / "dataset_rsicd.json"
# test_llm_train's tiny model and options, with room for the neighbours' captions in the prompt
TINY = {**LLM_TINY, "max_position_embeddings": 256}
FAST = {**LLM_FAST, "tiny_model": TINY, "tokenizer": {"kind": "word", "vocab_size": 300}, "max_length": 256}


def _split(split):
    by = {Path(r["image"]).stem: r for r in read_jsonl(COMPOSITIONS)}
    items = CaptionDataset(CAPTIONS, split=split).items
    return [it.filename for it in items], [by[Path(it.filename).stem] for it in items], [it.sentences for it in items]


@pytest.fixture(scope="module")
def index():
    return CompositionIndex(*_split("train"))


# ---------------------------------------------------------------------------------------------------- index
def test_an_image_is_never_its_own_neighbour(index):
    names, records, _ = _split("train")
    for rec, near in zip(records, index.neighbours(records, k=3), strict=True):
        assert len(near) == 3 and Path(rec["image"]).stem not in {Path(n.image).stem for n in near}
        assert [n.distance for n in near] == sorted(n.distance for n in near)
    # without exclusion each training image finds itself (or a twin of the same composition) at distance 0
    for name, near in zip(names, index.neighbours(records, k=2, exclude=False), strict=True):
        assert near[0].distance == pytest.approx(0.0, abs=1e-5)
        assert name in {n.image for n in near if n.distance < 1e-5}


def test_neighbours_are_of_the_same_kind(index):
    names, records, _ = _split("test")  # river_3, forest_3
    for name, near in zip(names, index.neighbours(records, k=1), strict=True):
        assert near[0].image.split("_")[0] == name.split("_")[0]


def test_index_round_trips_through_its_file(index, tmp_path):
    path = index.save(tmp_path / INDEX_FILE, captions_per_image=2)
    loaded = CompositionIndex.load(path)
    _, records, _ = _split("test")
    a, b = index.neighbours(records, 3), loaded.neighbours(records, 3)
    assert [[n.image for n in x] for x in a] == [[n.image for n in x] for x in b]
    assert all(n.captions == m.captions[:2] for x, y in zip(b, a, strict=True) for n, m in zip(x, y, strict=True))
    assert loaded.num_classes == index.num_classes


def scened(records, scene_of=lambda r: Path(r["image"]).stem.split("_")[0]):
    """The records as a scene head would have them: each sure of one scene (its category by default)."""
    return [with_scenes(r, [{"name": scene_of(r), "probability": 0.9}, {"name": "meadow", "probability": 0.05}])
            for r in records]


def test_scenes_pick_the_same_scene_neighbour(tmp_path):
    """A pond's composition that its scene head calls a river: without scenes its nearest training image is a pond
    (the same composition); with scenes, a river. Both lookups of the nearest-neighbour baseline follow."""
    names, records, captions = _split("train")
    pond = records[0]  # pond_1
    query = scened([{**pond, "image": "query.jpg"}], lambda r: "river")
    plain = CompositionIndex(names, records, captions)
    assert plain.neighbours(query, 1)[0][0].image == "pond_1.jpg"  # scenes in a query alone change nothing
    index = CompositionIndex(names, scened(records), captions)
    assert index.scenes == ["forest", "meadow", "parking", "pond", "river"]
    near = index.neighbours(query, 2)[0]
    assert [n.image.split("_")[0] for n in near] == ["river", "river"]
    nn = NearestNeighbour(scened(records), captions, num_classes=10, names=names)
    river_captions = {c for n, caps in zip(names, captions, strict=True) if n.startswith("river") for c in caps}
    assert nn.caption(query, k=1)[0] in river_captions and nn.caption(query, k=2)[0] in river_captions
    # the weight: a change of one sure scene to another (|p - q|^2 = 2) weighs as much as the compositions of two
    # training images differ on average
    comp = (index.x[:, : -len(index.scenes)][:, None, :] - index.x[None, :, : -len(index.scenes)]) ** 2
    assert 2 * index.scene_weight**2 == pytest.approx(comp.sum(-1).mean(), rel=1e-4)
    # saved and loaded with its scenes; an index without scenes writes the file as before (no scenes entry)
    loaded = CompositionIndex.load(index.save(tmp_path / "scenes.npz"))
    assert loaded.scenes == index.scenes and [n.image for n in loaded.neighbours(query, 2)[0]] == [n.image for n in near]
    with np.load(plain.save(tmp_path / "plain.npz")) as z:
        assert "scenes" not in z.files and plain.scenes == [] and plain.x.shape == (8, 6 * plain.num_classes)


def test_unreadable_index_names_the_file(tmp_path):
    bad = tmp_path / INDEX_FILE
    bad.write_text("not an archive")
    with pytest.raises(Exception, match=str(bad)):
        CompositionIndex.load(bad)


def test_consensus_order_puts_the_agreed_caption_first():
    caps = ["a pond near trees .", "two red cars", "a pond with trees .", "a pond near green trees ."]
    order = consensus_order(caps)
    assert order[-1] == "two red cars" and order[0] == "a pond near trees ." and sorted(order) == sorted(caps)


# ---------------------------------------------------------------------------------------------------- prompt
def test_prompt_without_retrieval_is_unchanged():
    old = PromptTemplate("Describe.", "{instruction}\n{composition}\nCaption:")
    new = PromptTemplate("Describe.", "{instruction}\n{composition}\n{neighbours}\nCaption:")
    assert new.render_text("pond 50%", [["ignored"]]) == old.render_text("pond 50%") == "Describe.\npond 50%\nCaption:"


def test_prompt_with_retrieval_shows_the_neighbours_captions():
    t = PromptTemplate("Describe.", "{instruction}\n{composition}\n{neighbours}\nCaption:", retrieval_k=2,
                       retrieval_captions=1)
    text = t.render_text("pond 50%", [["A pond .", "other"], ["a river ."], ["a third ."]])
    assert text == "Describe.\npond 50%\nSimilar images: a pond . | a river .\nCaption:"
    blind = PromptTemplate(t.instruction, t.template, "blind", retrieval_k=2)
    assert blind.render_text("pond 50%", [["a pond ."]]) == "Describe.\nSimilar images: a pond .\nCaption:"


@pytest.mark.parametrize("kw, words", [
    ({"template": "{instruction}\n{composition}\nCaption:", "retrieval_k": 2}, "lacks {neighbours}"),
    ({"retrieval_k": -1}, "PromptTemplate: retrieval_k -1 is invalid; expected an integer >= 0"),
    ({"retrieval_k": 1, "retrieval_captions": 0}, "retrieval_captions 0 is invalid; expected an integer >= 1"),
])
def test_bad_retrieval_options_are_named(kw, words):
    assert any(words in p for p in PromptTemplate(**kw).problems())


def test_training_prompts_show_other_images(index):
    t = PromptTemplate(retrieval_k=2)
    images, _ = build_image_examples(read_jsonl(COMPOSITIONS), CaptionDataset(CAPTIONS), "train", t, index=index)
    own = {im.image: set(im.captions) for im in images}
    for im in images:
        shown = im.prompt.split("Similar images: ", 1)[1].split("\n", 1)[0].split(" | ")
        assert len(shown) == 2 and not set(shown) & own[im.image]


# ---------------------------------------------------------------------------------------------------- consensus
def test_cider_d_matches_pycocoevalcap():
    """Our CIDEr-D with document frequencies from the references equals pycocoevalcap's CiderScorer, per image."""
    refs = [["a pond surrounded by green trees", "green trees around a small pond", "a pond in the forest"],
            ["a river runs through the forest", "a long river between green trees", "a river and many trees"],
            ["many cars are parked near buildings", "a parking lot with many cars", "cars parked beside a building"]]
    hyps = ["a pond surrounded by trees", "a river runs between green trees", "many cars in a parking lot"]
    scorer = CiderScorer(n=4, sigma=6.0)
    for h, r in zip(hyps, refs, strict=True):
        scorer += (h, r)
    _, theirs = scorer.compute_score()
    ours = CiderD(document_frequencies(refs))
    for h, r, t in zip(hyps, refs, theirs, strict=True):
        assert ours.score(h, r) == pytest.approx(float(t), abs=1e-9)


def test_consensus_picks_the_candidate_the_others_agree_with():
    cider = CiderD(document_frequencies([["a pond near trees", "a river"], ["many cars", "a pond"]]))
    cands = ["a red car", "a pond near trees", "a pond near green trees", "a pond near the trees"]
    assert cider.choose(cands) in (1, 2, 3) and cider.choose(cands) != 0
    assert cider.choose(["same caption"] * 3) == 0  # ties: the first (most probable)
    uniform = CiderD(None)  # a model folder without ngram_df.json: every n-gram weighs the same
    assert uniform.choose(cands) != 0


def test_consensus_reads_words_as_coco_scoring_does():
    """Punctuation is not a word (the PTB tokenizer drops it before CIDEr): the LM's "neatly." and a caption set's
    "neatly ." agree fully; apostrophes and inner hyphens stay in their words."""
    from llm.consensus import words

    assert words("Many Pieces of farmland are arranged neatly.") == words("many pieces of farmland are arranged neatly .")
    assert words("it's a well-known park , isn't it?") == ["it's", "a", "well-known", "park", "isn't", "it"]
    cider = CiderD(None)
    assert cider.score("a pond near trees.", ["a pond near trees ."]) == pytest.approx(10.0)


def test_weighted_consensus_counts_votes_by_their_weight():
    """Each candidate is scored against the others weighted by their weights (its own weight does not help it);
    a repeated caption is two votes; equal weights are the plain consensus."""
    cider = CiderD(None)
    cands = ["a pond near trees", "a pond near trees", "a river in a forest", "a river in a green forest"]
    assert cider.choose(cands) == 0  # the repeated caption: two votes
    assert cider.choose(cands, [1, 1, 1, 1]) == cider.choose(cands)
    assert cider.agreement(cands, [2, 2, 2, 2]) == pytest.approx(cider.agreement(cands))  # the scale of the mean
    assert cider.choose(cands, [0.1, 0.1, 1.0, 1.0]) in (2, 3)  # the river captions weigh more: they win
    with pytest.raises(ValueError, match="3 weights for 4 candidates"):
        cider.choose(cands, [1, 1, 1])
    with pytest.raises(ValueError, match="finite and >= 0"):
        cider.choose(cands, [1, -1, 1, 1])


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def rag_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("rag") / "model"
    finetune(out=out, epochs=30, learning_rate=1e-2, warmup_ratio=0.0, retrieval_k=2, save_checkpoints=False, **FAST)
    return out


def test_retrieval_model_saves_its_index_and_template(rag_model):
    meta = json.loads((rag_model / "segcap_llm.json").read_text())
    assert meta["prompt"]["retrieval_k"] == 2 and meta["options"]["retrieval_k"] == 2
    assert (rag_model / INDEX_FILE).is_file() and (rag_model / NGRAM_FILE).is_file()
    df = json.loads((rag_model / NGRAM_FILE).read_text())
    assert df["documents"] == 8 and all(n > 1 for n in df["df"].values())


def test_captioner_retrieves_and_explains(rag_model):
    cap = Captioner(rag_model, max_new_tokens=20)
    _, test, _ = _split("test")
    near = cap.neighbours(test)
    assert [len(n) for n in near] == [2, 2]
    assert all("Similar images: " in p for p in cap.prompts(test))
    assert near[0][0].image.startswith("river") and near[1][0].image.startswith("forest")


def test_candidates_consensus_and_seeded_samples(rag_model):
    cap = Captioner(rag_model, max_new_tokens=20)
    _, test, _ = _split("test")
    beams = cap.candidates(test, 4)
    assert [len(c) for c in beams] == [4, 4]
    assert cap.candidates(test, 1) == [[c] for c in cap.caption(test)]  # one candidate = greedy
    chosen = cap.caption(test, consensus=4)
    assert all(c in b for c, b in zip(chosen, beams, strict=True))
    a = cap.candidates(test, 4, "sample", seed=3)
    assert a == cap.candidates(test, 4, "sample", seed=3)  # seeded: the same samples
    assert cap.caption(test, consensus=4, candidates="sample", seed=3) == \
        cap.caption(test, consensus=4, candidates="sample", seed=3)


def test_consensus_pool_votes_with_the_neighbours_captions(rag_model):
    """With a pool, the chosen caption is a candidate or a caption of one of the K closest training images; the
    weights are the model's probabilities (the most probable 1), and the pool's neighbours are the index's."""
    cap = Captioner(rag_model, max_new_tokens=20)
    _, test, _ = _split("test")
    beams = cap.candidates(test, 3)
    voters = cap.neighbours(test, 2)
    assert [len(v) for v in voters] == [2, 2] and voters[0][0].image.startswith("river")
    chosen = cap.caption(test, consensus=3, pool=2)
    for c, b, v in zip(chosen, beams, voters, strict=True):
        assert c in b + [cap.surface(x) for nb in v for x in nb.captions]
        assert " ." not in c  # a caption-set caption is written as the model writes its own
    assert cap.surface("a pond is near a road .") == "a pond is near a road."
    scores = cap.log_likelihoods(test, beams)
    assert [len(s) for s in scores] == [3, 3]
    assert all(lp < 0 and n >= 2 for s in scores for lp, n in s)  # at least one word and EOS
    for w in cap.weights(test, beams):
        assert max(w) == pytest.approx(1.0) and all(0 < x <= 1 for x in w)
    # a caption the model was trained on is more probable than a scrambled one
    (good, bad), = cap.log_likelihoods(test[:1], [["a river runs through the forest", "forest the through runs a"]])
    assert good[0] > bad[0]
    with pytest.raises(ConfigError, match="needs consensus >= 2"):
        cap.caption(test, pool=2)


def test_pool_on_a_folder_without_the_index_says_train_again(rag_model, tmp_path, capsys):
    """A model folder from before every model saved its index: --consensus-pool stops with exit 2, naming the file."""
    old = tmp_path / "old"
    shutil.copytree(rag_model, old)
    (old / INDEX_FILE).unlink()
    meta = json.loads((old / "segcap_llm.json").read_text())
    meta["prompt"]["retrieval_k"] = 0
    (old / "segcap_llm.json").write_text(json.dumps(meta))
    out = tmp_path / "p.json"
    argv = ["--model", str(old), "--compositions", str(COMPOSITIONS), "--captions", str(CAPTIONS), "--out", str(out),
            "--consensus", "3", "--consensus-pool", "2"]
    with pytest.raises(SystemExit) as e:
        run_cli(generate, argv)
    assert e.value.code == 2 and "retrieval.npz" in capsys.readouterr().err and not out.exists()
    Captioner(old).caption(_split("test")[1], consensus=2)  # consensus without a pool needs no index


def test_generate_cli_consensus(rag_model, tmp_path, capsys):
    out = tmp_path / "preds.json"
    generate(model=rag_model, compositions=COMPOSITIONS, captions=CAPTIONS, out=out, consensus=3, progress=False)
    preds = json.loads(out.read_text())
    assert {p["image_id"] for p in preds} == {"river_3.jpg", "forest_3.jpg"}
    assert "consensus of 3 beam candidates" in capsys.readouterr().out


@pytest.mark.parametrize("flags, words", [
    (["--consensus", "1"], "--consensus must be 0 (off) or at least 2"),
    (["--candidates", "top"], "candidates"),
    (["--consensus-pool", "2"], "--consensus-pool 2 needs --consensus N"),
    (["--consensus", "3", "--consensus-pool", "-1"], "--consensus-pool '-1' is invalid; expected an integer >= 0"),
])
def test_generate_cli_refuses_bad_consensus(flags, words, tmp_path, capsys):
    argv = ["--model", str(tmp_path), "--compositions", str(COMPOSITIONS), "--out", str(tmp_path / "p.json"), *flags]
    with pytest.raises(SystemExit) as e:
        run_cli(generate, argv)
    assert e.value.code == 2 and words in capsys.readouterr().err


def test_finetune_refuses_retrieval_without_the_placeholder(tmp_path):
    with pytest.raises(ConfigError, match="lacks {neighbours}"):
        finetune(out=tmp_path / "m", epochs=1, retrieval_k=2, prompt_template="{instruction}\n{composition}\nCaption:",
                 **FAST)
    assert not (tmp_path / "m").exists()


def test_caption_explain_names_the_neighbours(rag_model, checkpoints, tmp_path, capsys):  # noqa: F811
    """pipeline.caption --explain prints the training images whose captions the prompt showed; --json keeps them."""
    images = [DRONE_IMAGES / "000.jpg"]
    results = run_cli(caption.main, [*map(str, images), "--segmentation", str(checkpoints["real"]), "--llm",
                                     str(rag_model), "--explain", "--consensus", "3", "--json",
                                     str(tmp_path / "c.json")], positional=("images",))
    out = capsys.readouterr().out
    near = results[0]["neighbours"]
    assert len(near) == 2 and all(n["image"] in out for n in near)
    assert out.count("  neighbour ") == 2
    assert json.loads((tmp_path / "c.json").read_text())[0]["neighbours"] == near
    # --consensus-pool: the training images whose captions voted are listed too
    results = run_cli(caption.main, [*map(str, images), "--segmentation", str(checkpoints["real"]), "--llm",
                                     str(rag_model), "--explain", "--consensus", "3", "--consensus-pool", "3"],
                      positional=("images",))
    out = capsys.readouterr().out
    assert out.count("  voter ") == 3 and len(results[0]["voters"]) == 3


def test_a_class_beyond_the_table(index):
    """With the class table's length given, an id outside it is an error naming the record; with the length inferred
    from the training records (a model folder's index), a class no training image has is left out."""
    _, records, captions = _split("train")
    odd = {**records[0], "image": "odd.jpg", "classes": [{**records[0]["classes"][0], "id": 42}]}
    with pytest.raises(DataError, match="odd.jpg: class id 42"):
        CompositionIndex([f"{i}.jpg" for i in range(len(records))], records, captions, num_classes=10).neighbours([odd], 1)
    assert len(index.neighbours([odd], 2)[0]) == 2
