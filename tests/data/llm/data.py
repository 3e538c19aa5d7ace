"""Make the tiny llm fixture: hand-shaped composition records + a Karpathy-split caption JSON (seeded).

    python tests/data/llm/data.py

Writes, beside this file:
    compositions.jsonl       segcap.composition/1 records (DESIGN.md format), one per image, caption-set order
    rsicd/dataset_rsicd.json 12 images (8 train, 2 val, 2 test), 5 raw captions each

Duplicates on purpose: pond_1 has one caption twice, and pond_2 has the same composition and one shared caption as
pond_1 (so 2 exact duplicate (prompt, caption) pairs in train). forest_1 has no composition in
compositions_missing.jsonl (for the mismatch error).
"""

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
POS = {(0, 0): "top left", (1, 0): "top", (2, 0): "top right", (0, 1): "left", (1, 1): "center", (2, 1): "right",
       (0, 2): "bottom left", (1, 2): "bottom", (2, 2): "bottom right"}
NAMES = {0: "unlabeled", 1: "artificial surface", 2: "natural surface", 3: "water", 4: "vegetation", 5: "building",
         8: "vehicles"}


def cls(cid, percent, cx, cy, regions=1, elong=1.2):
    pos = POS[(min(int(cx * 3), 2), min(int(cy * 3), 2))]
    r = round(min(0.71, (percent / 100) ** 0.5 * 0.6 + 0.05), 3)
    return {"id": cid, "name": NAMES[cid], "percent": percent, "center": [cx, cy], "radius": r,
            "centroid": [cx, cy], "regions": regions, "largest_region_percent": round(percent / regions, 1),
            "bbox": [round(max(0, cx - r), 3), round(max(0, cy - r), 3), round(min(1, cx + r), 3),
                     round(min(1, cy + r), 3)], "elongation": elong, "position": pos}


def record(image, classes, relations):
    classes = sorted(classes, key=lambda c: -c["percent"])
    return {"schema": "segcap.composition/1", "image": image, "width": 224, "height": 224, "classes": classes,
            "relations": [{"subject": s, "relation": r, "object": o} for s, r, o in relations]}


def main():
    rng = random.Random(0)
    pond = [cls(4, 70.0, 0.5, 0.5, 2), cls(3, 30.0, 0.5, 0.5)]
    pond_rel = [("water", "surrounded by", "vegetation")]
    items = [
        ("pond_1.jpg", "train", pond, pond_rel,
         ["A pond is surrounded by green trees .", "a pond is surrounded by green trees .",
          "There is a small pond in the forest .", "green trees around a pond .", "a pond in the middle ."]),
        ("pond_2.jpg", "train", pond, pond_rel,
         ["a pond is surrounded by green trees .", "a round pond among many trees .",
          "a lake surrounded by trees .", "trees surround the water .", "some water in a green forest ."]),
        ("river_1.jpg", "train", [cls(4, 60.0, 0.5, 0.5, 2), cls(3, 40.0, 0.5, 0.5, 1, 6.5)],
         [("water", "on", "vegetation")],
         ["a river goes through the forest .", "a long river crosses green trees .", "a river runs across .",
          "a winding river between trees .", "water flows through a green area ."]),
        ("river_2.jpg", "train", [cls(4, 55.0, 0.4, 0.5, 2), cls(3, 35.0, 0.6, 0.5, 1, 7.0), cls(1, 10.0, 0.8, 0.2)],
         [("water", "right of", "vegetation"), ("artificial surface", "above right of", "vegetation")],
         ["a river with a road near it .", "a long river beside green trees .", "a river and a road .",
          "a curved river crosses the land .", "a river is next to a forest ."]),
        ("forest_1.jpg", "train", [cls(4, 100.0, 0.5, 0.5)], [],
         ["many green trees .", "a dense forest .", "lots of trees are in the forest .",
          "a large area of green trees .", "the forest is dense ."]),
        ("forest_2.jpg", "train", [cls(4, 92.0, 0.5, 0.5), cls(2, 8.0, 0.2, 0.8, 1, 3.0)],
         [("natural surface", "below left of", "vegetation")],
         ["a forest with a dirt path .", "dense trees and a bare path .", "green forest with some bare land .",
          "many trees and a path .", "a path goes into the forest ."]),
        ("parking_1.jpg", "train", [cls(1, 75.0, 0.5, 0.5), cls(8, 15.0, 0.5, 0.4, 12, 1.8), cls(4, 10.0, 0.1, 0.9)],
         [("vehicles", "on", "artificial surface"), ("vegetation", "below left of", "artificial surface")],
         ["many cars are parked in a parking lot .", "a parking lot full of cars .", "cars parked in rows .",
          "a large parking lot with many cars .", "many cars in a parking area ."]),
        ("parking_2.jpg", "train", [cls(1, 85.0, 0.5, 0.5), cls(8, 5.0, 0.3, 0.3, 4, 1.9), cls(5, 10.0, 0.8, 0.8)],
         [("vehicles", "on", "artificial surface"), ("building", "below right of", "artificial surface")],
         ["a few cars in a parking lot .", "a parking lot near a building .", "some cars are parked .",
          "an almost empty parking lot .", "a building beside a parking lot ."]),
        ("pond_3.jpg", "val", [cls(4, 65.0, 0.5, 0.5, 3), cls(3, 35.0, 0.45, 0.55)], pond_rel,
         ["a pond surrounded by trees .", "a small lake in a forest .", "green trees around the pond .",
          "a pond in the middle of trees .", "there is a pond ."]),
        ("parking_3.jpg", "val", [cls(1, 80.0, 0.5, 0.5), cls(8, 12.0, 0.5, 0.5, 9, 1.7), cls(4, 8.0, 0.9, 0.1)],
         [("vehicles", "on", "artificial surface"), ("vegetation", "above right of", "artificial surface")],
         ["many cars are parked .", "a parking lot with cars .", "cars in a parking lot .",
          "a parking lot is full .", "rows of parked cars ."]),
        ("river_3.jpg", "test", [cls(4, 58.0, 0.5, 0.5, 2), cls(3, 42.0, 0.5, 0.5, 1, 6.0)],
         [("water", "on", "vegetation")],
         ["a river crosses the forest .", "a long river through trees .", "a river runs through .",
          "a river between green trees .", "water crossing a green area ."]),
        ("forest_3.jpg", "test", [cls(4, 97.0, 0.5, 0.5), cls(0, 3.0, 0.9, 0.9)],
         [("unlabeled", "below right of", "vegetation")],
         ["a dense forest .", "many green trees .", "a piece of forest .", "trees everywhere .",
          "a green forest ."]),
    ]
    images, records = [], []
    for i, (fn, split, classes, rels, sents) in enumerate(items):
        images.append({"filename": fn, "imgid": i, "split": split, "sentids": list(range(5 * i, 5 * i + 5)),
                       "sentences": [{"raw": s, "tokens": s.lower().rstrip(" .").split(), "imgid": i,
                                      "sentid": 5 * i + k} for k, s in enumerate(sents)]})
        records.append(record(fn, [dict(c) for c in classes], rels))
    rng.shuffle(records)  # the join must not depend on order
    (HERE / "rsicd").mkdir(exist_ok=True)
    (HERE / "rsicd" / "dataset_rsicd.json").write_text(json.dumps({"images": images, "dataset": "rsicd"}, indent=1))
    lines = [json.dumps(r, separators=(",", ":")) for r in records]
    (HERE / "compositions.jsonl").write_text("\n".join(lines) + "\n")
    missing = [ln for ln, r in zip(lines, records, strict=True) if r["image"] != "forest_1.jpg"]
    (HERE / "compositions_missing.jsonl").write_text("\n".join(missing) + "\n")


if __name__ == "__main__":
    main()
