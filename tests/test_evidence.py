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


def test_report_sections_scenes_and_evidence(tmp_path):
    import json

    from pipeline.layout import Layout
    from pipeline.report import evidence_section, scenes_md

    caps = tmp_path / "caps"
    (caps / "imgs").mkdir(parents=True)
    (caps / "txtclasses_ucm").mkdir()
    (caps / "txtclasses_ucm" / "forest.txt").write_text("1.tif\n")
    (caps / "txtclasses_ucm" / "river.txt").write_text("2.tif\n")
    images = [{"filename": f"{i}.tif", "imgid": i, "split": "train",
               "sentences": [{"raw": raw}] * 5} for i, raw in ((1, "green trees ."), (2, "a river with trees ."))]
    (caps / "dataset_ucm.json").write_text(json.dumps({"images": images, "dataset": "other"}))
    lay = Layout(run_dir=tmp_path / "run", captions_root=caps, drone_root=tmp_path / "drone")
    assert lay.images_dir == "imgs" and lay.captions_json == "dataset_ucm.json"
    assert scenes_md(lay) == [] and evidence_section(lay) == []
    lay.predicted.parent.mkdir(parents=True)
    import numpy as np

    from aerialdata.classes import load_class_table
    from composition.extract import extract

    table = load_class_table("aerial10")
    forest = np.full((10, 10), table.names.index("vegetation"), dtype=np.uint8)
    river = forest.copy()
    river[:6] = table.names.index("water")
    lay.predicted.write_text("\n".join(json.dumps(extract(m, table, image=f"{i}.png"))
                                       for i, m in ((1, forest), (2, river))))
    md = "\n".join(evidence_section(lay))
    assert "| river | 1 | water 60%, vegetation 40% | water 100%, vegetation 100% |" in md
    lay.scenes.mkdir(parents=True)
    (lay.scenes / "scene_head.json").write_text(json.dumps({
        "classes": ["forest", "river"], "features": {"encoder": "mobilenet_v2", "strides": [16, 32], "colour": True},
        "metrics": {"train_accuracy": 1.0, "val_accuracy": 0.9, "test_accuracy": 0.85}}))
    md = "\n".join(scenes_md(lay))
    assert "## Scenes" in md and "val 0.900, test 0.850" in md and "2 categories" in md
