"""composition.evidence: the groups captions name, beside what the compositions hold, per scene class."""

from composition.evidence import caption_groups, evidence, evidence_md, load_caption_words


def _rec(image: str, shares: dict[str, float]) -> dict:
    return {"image": image, "classes": [{"name": n, "percent": p} for n, p in shares.items()]}


def test_caption_groups_reads_words_and_plurals():
    words = load_caption_words()
    assert caption_groups("Many buildings and green trees are in a dense residential area .", words) == {
        "building", "vegetation"}
    assert caption_groups("Some cars are parked on the roads.", words) == {"vehicles", "artificial surface"}
    assert caption_groups("It is a piece of nothing.", words) == set()


def test_evidence_per_class_and_recall():
    words = load_caption_words()
    refs = {"1.tif": ["lots of trees .", "a forest .", "green trees .", "trees and a road .", "dense forest ."],
            "2.tif": ["many buildings .", "houses and roads .", "buildings .", "a residential area .", "roofs ."]}
    cats = {"1.tif": "forest", "2.tif": "denseresidential"}
    records = [_rec("1.png", {"vegetation": 90.0, "water": 10.0}), _rec("2.png", {"vegetation": 100.0})]
    fig = evidence(records, refs, cats, words)
    assert fig["classes"]["forest"]["percent"]["vegetation"] == 90.0
    assert fig["classes"]["forest"]["named"]["vegetation"] == 1.0
    assert fig["classes"]["denseresidential"]["named"]["building"] == 1.0
    # named by most captions: vegetation (image 1), building (image 2); found: vegetation, water / vegetation
    assert fig["named_found"] == 0.5
    assert fig["found_named"] == round(1 / 3, 3)
    md = "\n".join(evidence_md(fig))
    assert "| forest | 1 | vegetation 90%, water 10% | vegetation 100%" in md
    assert "50%" in md


def test_evidence_skips_records_outside_the_references():
    words = load_caption_words()
    fig = evidence([_rec("9.png", {"water": 100.0})], {"1.tif": ["water ."]}, {"1.tif": "river"}, words)
    assert fig["classes"] == {} and fig["named_found"] is None
    assert evidence_md(fig) == []
