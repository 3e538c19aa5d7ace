"""Make the tiny caption set and prediction files of tests/test_evaluation*.py (deterministic; run from anywhere).

    python tests/data/evaluation/data.py

- dataset_rsicd.json: Karpathy-split JSON (RSICD format), 8 test images in 3 categories (from the filename prefix)
  and 2 train images. RSICD-style raw captions (capitals, " ." endings) so that the PTB tokenizer has work to do.
  The two park images have 5 identical references each, with no 4-gram in common: their human-agreement ceiling
  is BLEU-1..4 = 1, ROUGE-L = 1 and CIDEr = 10 (identical TF-IDF vectors, cosine 1, x10) in every round.
  airport_3 has 4 references only (it sits out the 5th leave-one-out round).
- sys_a.json, sys_b.json: COCO results files for the 8 test images (sys_b repeats one caption everywhere).
- captions_coco.json: the same 8 test images and references in COCO caption format (``images`` with numeric ``id``
  and ``file_name``, ``annotations``), as /work/shared/anchors/rsicd-captions/captions_val.json (RSICD val) is laid
  out. The ids are not positions (park_1.jpg is 9049, airport_3.jpg 9000), so a lookup by position would fail.
- sys_a_coco_ids.json: sys_a's captions with the COCO ids of captions_coco.json as image_id (JSON numbers), in
  reverse order, as COCO-style tools write results.
- sys_a_imgids.json: sys_a's captions with the ``imgid`` of dataset_rsicd.json as image_id.
"""

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

TEST = {
    "park_1.jpg": ["Many green trees are planted around a playground in the park ."] * 5,
    "park_2.jpg": ["A curved lake with two bridges sits next to some lawns ."] * 5,
    "pond_1.jpg": [
        "A pond is surrounded by green trees .",
        "The dark green pond is surrounded by dense forest .",
        "Some green trees are around a pond .",
        "A small pond sits in the middle of many trees .",
        "There is a pond in the forest .",
    ],
    "pond_2.jpg": [
        "A long pond is next to some farmland and a road .",
        "Several fields are near an elongated pond .",
        "A narrow pond lies beside a road and some fields .",
        "Some farmland and a road are near a pond .",
        "It is a pond with fields on both sides .",
    ],
    "pond_3.jpg": [
        "Some buildings are built beside a round pond .",
        "A round pond is surrounded by several buildings .",
        "Several houses are around a blue pond .",
        "There are some buildings near a pond .",
        "A pond, some houses and a road .",
    ],
    "airport_1.jpg": [
        "Several planes are parked near the terminal of an airport .",
        "Many airplanes are stopped beside a terminal building .",
        "Some planes are parked at the airport .",
        "An airport with a terminal and several planes .",
        "There are several airplanes near a big terminal .",
    ],
    "airport_2.jpg": [
        "A long runway crosses a large airport .",
        "There is a runway with some marks in an airport .",
        "An airport with a long runway and some grass .",
        "A runway is between two green lawns .",
        "The long runway of the airport is next to grassland .",
    ],
    "airport_3.jpg": [
        "Two planes are parked on the apron of the airport .",
        "There are two airplanes on an apron .",
        "An apron with two planes and some lines .",
        "Two white planes stop at the airport .",
    ],
}
TRAIN = {
    "park_9.jpg": ["A park with many trees and a pond ."] * 5,
    "pond_9.jpg": ["A pond is next to some buildings ."] * 5,
}
SYS_A = {
    "park_1.jpg": "Many green trees are around a playground in a park.",
    "park_2.jpg": "A lake with a bridge is next to some green lawns.",
    "pond_1.jpg": "A pond is surrounded by many green trees.",
    "pond_2.jpg": "A pond is next to a road and some farmland.",
    "pond_3.jpg": "Some buildings are around a round pond.",
    "airport_1.jpg": "Several planes are parked near a terminal.",
    "airport_2.jpg": "A long runway is in an airport with some grass.",
    "airport_3.jpg": "Two planes are parked at the airport.",
}
SYS_B_CAPTION = "Many buildings and green trees are in a dense residential area."
COCO_IDS = {fn: 9000 + 7 * k for k, fn in enumerate(reversed(list(TEST)))}  # park_1.jpg -> 9049, airport_3.jpg -> 9000


def main() -> None:
    images, sentid = [], 0
    for imgid, (split, (fn, caps)) in enumerate(
        [("test", kv) for kv in TEST.items()] + [("train", kv) for kv in TRAIN.items()]
    ):
        sents = []
        for c in caps:
            sents.append({"raw": c, "tokens": c.lower().rstrip(" .").split(), "imgid": imgid, "sentid": sentid})
            sentid += 1
        images.append(
            {"filename": fn, "imgid": imgid, "split": split, "sentences": sents, "sentids": [s["sentid"] for s in sents]}
        )
    (HERE / "dataset_rsicd.json").write_text(json.dumps({"images": images, "dataset": "rsicd-tiny"}, indent=1) + "\n")
    (HERE / "sys_a.json").write_text(json.dumps([{"image_id": k, "caption": v} for k, v in SYS_A.items()], indent=1) + "\n")
    sys_b = [{"image_id": k, "caption": SYS_B_CAPTION} for k in TEST]
    (HERE / "sys_b.json").write_text(json.dumps(sys_b, indent=1) + "\n")

    coco_images = [{"id": COCO_IDS[fn], "file_name": fn, "width": 32, "height": 32} for fn in TEST]
    pairs = [(fn, c) for fn, caps in TEST.items() for c in caps]
    annotations = [{"id": 1 + i, "image_id": COCO_IDS[fn], "caption": c} for i, (fn, c) in enumerate(pairs)]
    coco = {"info": {"description": "rsicd-tiny in COCO caption format"}, "images": coco_images,
            "annotations": annotations, "licenses": []}
    (HERE / "captions_coco.json").write_text(json.dumps(coco, indent=1) + "\n")
    by_id = [{"image_id": COCO_IDS[k], "caption": v} for k, v in reversed(SYS_A.items())]
    (HERE / "sys_a_coco_ids.json").write_text(json.dumps(by_id, indent=1) + "\n")
    imgid = {im["filename"]: im["imgid"] for im in images}
    by_imgid = [{"image_id": imgid[k], "caption": v} for k, v in SYS_A.items()]
    (HERE / "sys_a_imgids.json").write_text(json.dumps(by_imgid, indent=1) + "\n")


if __name__ == "__main__":
    main()
