#!/usr/bin/env python3
"""Make the tiny OpenEarthMap-format fixture (seeded): 32x32 GeoTIFFs in OpenEarthMap's published tree, a few KB.

Same tree, names, dtypes and id range as OpenEarthMap (https://zenodo.org/records/7223446, OpenEarthMap_wo_xBD):

    train.txt, val.txt, test.txt           file names, one a line
    <region>/images/<region>_<n>.tif       RGB uint8 GeoTIFF (LZW, with GeoTIFF tags: pixel scale, tie point, keys)
    <region>/labels/<region>_<n>.tif       uint8 GeoTIFF: 0 unknown, 1 bareland, 2 rangeland, 3 developed space,
                                           4 road, 5 tree, 6 water, 7 agriculture land, 8 building

As in the published archive: aachen_3 is a test tile without a label (test labels withheld), and palu_1 is listed in
train.txt with its label but no image (an xBD region, whose images must be added separately).
Run: python tests/data/openearthmap/data.py
"""

from pathlib import Path

import numpy as np
from PIL import Image, TiffImagePlugin, TiffTags

ROOT = Path(__file__).resolve().parent
S = 32
COLOURS = np.array([(0, 0, 0), (170, 150, 110), (140, 170, 90), (160, 150, 150), (110, 110, 110), (30, 90, 40),
                    (30, 60, 140), (120, 160, 60), (200, 90, 70)], np.int16)
SPLITS = {"train": ["aachen_1", "chicago_2", "palu_1"], "val": ["aachen_2"], "test": ["aachen_3", "chicago_5"]}
NO_IMAGE = {"palu_1"}                   # xBD: label only
NO_LABEL = {"aachen_3"}                 # test label withheld
# chicago_5 is a test tile whose label is there (as in later releases)


def geotags(x0: float, y0: float, gsd: float) -> TiffImagePlugin.ImageFileDirectory_v2:
    """GeoTIFF tags of a north-up tile in WGS 84 / UTM 32N: what real OpenEarthMap files carry, unused by the reader."""
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    ifd[33550] = (gsd, gsd, 0.0)                                # ModelPixelScaleTag
    ifd.tagtype[33550] = TiffTags.DOUBLE
    ifd[33922] = (0.0, 0.0, 0.0, x0, y0, 0.0)                   # ModelTiepointTag
    ifd.tagtype[33922] = TiffTags.DOUBLE
    ifd[34735] = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32632)  # GeoKeyDirectoryTag
    ifd.tagtype[34735] = TiffTags.SHORT
    return ifd


def tile(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    mask = np.full((S, S), 2, np.uint8)                         # rangeland
    mask[: S // 2, : S // 2] = 7                                # agriculture land
    mask[S // 2 :, S // 2 :] = 3                                # developed space
    x = int(rng.integers(12, 18))
    mask[:, x : x + 3] = 4                                      # a road down
    mask[20:27, 22:29] = 8                                      # a building
    mask[2:8, 20:28] = 5                                        # trees
    mask[S - 5 :, :6] = 6                                       # water
    mask[10:14, 2:6] = 1                                        # bare land
    mask[0, :] = 0                                              # an unknown row
    img = COLOURS[mask] + rng.integers(-10, 11, (S, S, 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask


def main() -> None:
    rng = np.random.default_rng(0)
    for split, names in SPLITS.items():
        (ROOT / f"{split}.txt").write_text("".join(f"{n}.tif\n" for n in names))
        for k, name in enumerate(names):
            img, mask = tile(rng)
            region = name.rsplit("_", 1)[0]
            tags = geotags(500000.0 + 100 * k, 5600000.0, 0.5)
            if name not in NO_IMAGE:
                (ROOT / region / "images").mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(ROOT / region / "images" / f"{name}.tif", compression="tiff_lzw",
                                          tiffinfo=tags)
            if name not in NO_LABEL:
                (ROOT / region / "labels").mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask, mode="L").save(ROOT / region / "labels" / f"{name}.tif",
                                                     compression="tiff_lzw", tiffinfo=tags)


if __name__ == "__main__":
    main()
