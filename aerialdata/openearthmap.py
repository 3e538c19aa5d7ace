"""Reader for OpenEarthMap (Xia et al. 2023), in its published layout, mapped to the groups by a class map.

On disk, as the zenodo archive unzips (https://zenodo.org/records/7223446, ``OpenEarthMap_wo_xBD``)::

    <root>/train.txt, val.txt, test.txt     file names, one a line (``aachen_1.tif``): the published split
    <root>/<region>/images/<region>_<n>.tif RGB GeoTIFF, uint8, 0.25-0.5 m per pixel (97 regions, 44 countries)
    <root>/<region>/labels/<region>_<n>.tif uint8 GeoTIFF: 0 unknown, 1 bareland, 2 rangeland, 3 developed space,
                                            4 road, 5 tree, 6 water, 7 agriculture land, 8 building

The GeoTIFFs are read with Pillow (built with libtiff: LZW, deflate, tiles); their geo tags are not needed, so the
project takes no GDAL/rasterio dependency. Items keep their published split; a listed file is left out, and noted in
``skipped``, when its image is absent (the xBD regions ship labels only until their images are added with the
dataset's ``compile_xbd.py``) or when a test item has no label (test labels are withheld). Without split lists, every
image with a label is an item and ``splits`` is None. Stems are the file names' stems (``aachen_1``), unique by their
region prefix. The class map (``configs/classes/maps/openearthmap.yaml``) sends ``unknown`` to IGNORE. The ground
resolution varies by region (0.25-0.5 m); 0.5 is used unless the source entry gives ``gsd``.
"""

from __future__ import annotations

import re
from pathlib import Path

from aerialdata.labelled import Item, PairedSource, SourceNotFoundError, read_split_lists
from segcap.errors import DataError


class OpenEarthMapNotFoundError(SourceNotFoundError):
    """The OpenEarthMap root, its region folders or the listed files are missing."""

    def __init__(self, root: Path, missing: Path | str, hint: str = ""):
        super().__init__(
            "OpenEarthMap", root, missing,
            layout=f"{root}/<region>/images/<region>_<n>.tif with <region>/labels/<region>_<n>.tif, and the split "
                   f"lists {root}/train.txt, val.txt, test.txt",
            fix=(f"{hint + ' ' if hint else ''}Download OpenEarthMap from https://zenodo.org/records/7223446 and unzip "
                 "it so that the region folders and the split lists are directly in the root"),
        )


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


class OpenEarthMap(PairedSource):
    """OpenEarthMap's labelled tiles, mapped to the table's groups.

    Args: those of :class:`aerialdata.labelled.PairedSource` (``split``: ``train``, ``val`` or ``test``).
    """

    name = "openearthmap"
    title = "OpenEarthMap"
    published_gsd = 0.5
    images_dir = "images"
    labels_dir = "labels"
    suffixes = (".tif", ".tiff")

    def _verify(self) -> None:
        if not self.root.is_dir():
            raise OpenEarthMapNotFoundError(self.root, self.root)
        if not any(d.is_dir() and (d / self.labels_dir).is_dir() for d in self.root.iterdir()):
            raise OpenEarthMapNotFoundError(self.root, self.root / "<region>" / self.labels_dir,
                                            "No region folder with a labels/ folder is there.")

    def _index(self, sub: str) -> dict[str, Path]:
        """{stem: path} of the TIFFs in every ``<region>/<sub>/``."""
        out: dict[str, Path] = {}
        for region in sorted(d for d in self.root.iterdir() if d.is_dir() and (d / sub).is_dir()):
            for f in (region / sub).iterdir():
                if not (f.is_file() and f.suffix.lower() in self.suffixes):
                    continue
                if f.stem in out:
                    raise DataError(f"{f}: the name {f.name} is also {out[f.stem]}; names must be unique across regions")
                out[f.stem] = f
        return out

    def _find(self) -> list[Item]:
        images, labels = self._index(self.images_dir), self._index(self.labels_dir)
        lists = read_split_lists(self.root, self.split_names)
        items: list[Item] = []
        if lists is None:
            for stem in sorted(images, key=_natural):
                if stem in labels:
                    items.append(Item(stem, images[stem], labels[stem], None))
                else:
                    self.skipped.append((str(images[stem]), "no label file"))
        else:
            order = {s: i for i, s in enumerate(self.split_names)}
            for stem, split in sorted(lists.items(), key=lambda kv: (order[kv[1]], _natural(kv[0]))):
                if stem not in images:
                    self.skipped.append((f"{stem}.tif", "no image (xBD regions: add their images with compile_xbd.py)"))
                elif stem not in labels:
                    if split != "test":
                        raise DataError(
                            f"{images[stem]}: listed in {split}.txt but {images[stem].parent.parent / self.labels_dir}"
                            f" has no {images[stem].name}; unzip the archive again"
                        )
                    self.skipped.append((str(images[stem]), "test label withheld"))
                else:
                    items.append(Item(stem, images[stem], labels[stem], split))
            listed = set(lists)
            self.skipped += [(str(images[s]), "in no split list") for s in sorted(images) if s not in listed]
        if not items:
            hint = (f"{len(self.skipped)} listed file(s) were left out, e.g. {self.skipped[0][0]}: {self.skipped[0][1]}."
                    if self.skipped else "")
            raise OpenEarthMapNotFoundError(self.root, self.root / "<region>" / self.images_dir / "<name>.tif", hint)
        return items
