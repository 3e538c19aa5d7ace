"""Make the composition test fixtures (seeded; run from the repo root: python tests/data/composition/data.py).

    masks/          32x32 single-channel PNG masks of seed10 group ids (what segmentation.predict writes),
                    plus corrupt.png (not a PNG: truncated bytes) to test the bad-file policy
    source_masks/   the same scenes in drone SOURCE ids 0..23 (what the caption set's ground truth holds)
"""

from pathlib import Path

import cv2
import numpy as np

from aerialdata.classes import SOURCE_ID, load_class_table
from aerialdata.images import write_mask

HERE = Path(__file__).resolve().parent


def scenes() -> dict[str, np.ndarray]:
    """Three 32x32 scenes in source ids: a pond in grass, buildings beside a road, a river with a car."""
    out = {}
    m = np.full((32, 32), SOURCE_ID["grass"], np.uint8)
    cv2.circle(m, (16, 15), 7, SOURCE_ID["water"], -1)
    out["pond_1"] = m
    m = np.full((32, 32), SOURCE_ID["grass"], np.uint8)
    m[:, 12:20] = SOURCE_ID["paved-area"]
    m[4:12, 0:12] = SOURCE_ID["wall"]
    m[20:28, 0:12] = SOURCE_ID["wall"]
    out["road_2"] = m
    m = np.full((32, 32), SOURCE_ID["tree"], np.uint8)
    m[12:19, :] = SOURCE_ID["water"]
    m[2:4, 25:29] = SOURCE_ID["car"]
    m[30:, :3] = SOURCE_ID["unlabeled"]
    out["river_3"] = m
    return out


def main() -> None:
    table = load_class_table("seed10")
    for name, src in scenes().items():
        write_mask(HERE / "source_masks" / f"{name}.png", src)
        write_mask(HERE / "masks" / f"{name}.png", table.group(src), table.colors)
    junk = np.random.default_rng(0).integers(0, 256, 40, dtype=np.uint8).tobytes()
    (HERE / "masks" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + junk)  # a PNG signature, then junk


if __name__ == "__main__":
    main()
