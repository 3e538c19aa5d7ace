"""Make the tiny captioners fixture: a Karpathy-split caption set with its images, seeded.

    python tests/data/captioners/data.py

Writes, beside this file, in RSICD's layout:
    dataset_rsicd.json    16 images (4 categories x 4: 2 train, 1 val, 1 test), 5 raw captions each
    RSICD_images/*.jpg    32x32 RGB JPEGs: a pond (blue disc on grass), a forest (dark green speckle),
                          bare land (brown), a beach (sand beside blue sea)
"""

import json
import random
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
SIZE = 32
CAPTIONS = {
    "pond": ["a pond is surrounded by green trees .", "there is a round pond in the meadow .",
             "a small pond among green grass .", "the blue pond is in the middle .", "green grass around a pond ."],
    "forest": ["many green trees are in the forest .", "a dense forest .", "lots of trees grow together .",
               "the forest is dark green .", "many trees form a forest ."],
    "bareland": ["it is a piece of bare land .", "a large piece of brown land .", "the bare land is empty .",
                 "a piece of land with nothing .", "some brown bare land ."],
    "beach": ["a beach is next to the blue sea .", "yellow sand is beside the sea .", "waves hit the beach .",
              "the sea is on the right of the beach .", "a beach between land and sea ."],
}
SPLITS = ["train", "train", "val", "test"]


def draw(category: str, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(0, 12, (SIZE, SIZE, 3))
    img = np.zeros((SIZE, SIZE, 3))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    if category == "pond":
        img[:] = (90, 150, 70)
        cx, cy, r = rng.uniform(12, 20), rng.uniform(12, 20), rng.uniform(6, 10)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r**2] = (40, 70, 150)
    elif category == "forest":
        img[:] = (30, 80, 35)
        img += rng.normal(0, 25, (SIZE, SIZE, 1))
    elif category == "bareland":
        img[:] = (150, 110, 70)
    else:
        edge = int(rng.uniform(14, 20))
        img[:] = (220, 200, 140)
        img[:, edge:] = (40, 90, 170)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def main() -> None:
    rng = np.random.default_rng(0)
    shuffle = random.Random(0)
    (HERE / "RSICD_images").mkdir(exist_ok=True)
    images, sentid = [], 0
    for category, caps in CAPTIONS.items():
        for k, split in enumerate(SPLITS, start=1):
            name = f"{category}_{k}.jpg"
            Image.fromarray(draw(category, rng)).save(HERE / "RSICD_images" / name, quality=90)
            chosen = shuffle.sample(caps, len(caps))
            sents = [{"raw": c, "tokens": c.rstrip(" .").split(), "imgid": len(images), "sentid": sentid + i}
                     for i, c in enumerate(chosen)]
            images.append({"filename": name, "imgid": len(images), "split": split, "sentences": sents,
                           "sentids": [s["sentid"] for s in sents]})
            sentid += len(sents)
    (HERE / "dataset_rsicd.json").write_text(json.dumps({"images": images, "dataset": "rsicd"}, indent=1) + "\n")


if __name__ == "__main__":
    main()
