"""Reader for LoveDA (Wang et al. 2021), in its published layout, mapped to the groups by a class map.

On disk, as the zenodo archives unzip (https://zenodo.org/records/5706578: Train.zip, Val.zip, Test.zip)::

    <root>/Train/Urban/images_png/<n>.png     1024x1024 RGB, 0.3 m per pixel (Google Earth; Nanjing, Changzhou, Wuhan)
    <root>/Train/Urban/masks_png/<n>.png      uint8: 0 no-data, 1 background, 2 building, 3 road, 4 water, 5 barren,
    <root>/Train/Rural/...                                 6 forest, 7 agriculture
    <root>/Val/{Urban,Rural}/...              the same
    <root>/Test/{Urban,Rural}/images_png/     no masks published: never read

Items keep their published split (``splits``: ``train`` for Train/, ``val`` for Val/). Stems are ``<scene>_<n>``
(``rural_0``, ``urban_1366``): LoveDA numbers its tiles across the whole set, and the scene prefix keeps stems unique
and readable even where a copy renumbers one scene; a stem seen twice is refused. The class map
(``configs/classes/maps/loveda.yaml``) sends no-data and background to IGNORE.

Usage::

    from aerialdata.loveda import LoveDA
    ds = LoveDA("/data/LoveDA", "aerial10", split="train")
    image, mask = ds.load(0, scale=0.3 / 1.0)   # to the caption set's 1 m per pixel
"""

from __future__ import annotations

import re
from pathlib import Path

from aerialdata.images import list_images
from aerialdata.labelled import Item, PairedSource, SourceNotFoundError
from segcap.errors import ConfigError, DataError


class LoveDANotFoundError(SourceNotFoundError):
    """The LoveDA root, or one of its split, scene, image or mask folders, is missing."""

    def __init__(self, root: Path, missing: Path, hint: str = ""):
        super().__init__(
            "LoveDA", root, missing,
            layout=f"{root}/Train/{{Urban,Rural}}/images_png/<n>.png with masks_png/<n>.png beside images_png, "
                   "and the same under Val/",
            fix=(f"{hint + ' ' if hint else ''}Download Train.zip and Val.zip from https://zenodo.org/records/5706578 "
                 "(LoveDA, CC BY-NC-SA 4.0) and unzip both into the root"),
        )


def _natural(path: Path) -> tuple:
    """Sort key: numbered files by number (2 before 10), others by name."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem))


class LoveDA(PairedSource):
    """LoveDA's Train and Val tiles with their masks (Test has none), mapped to the table's groups.

    Args: those of :class:`aerialdata.labelled.PairedSource` (``split``: ``train`` or ``val``), and

        scenes: which scene folders to read (``Urban``, ``Rural``); None: both.
    """

    name = "loveda"
    title = "LoveDA"
    published_gsd = 0.3
    split_dirs = {"train": "Train", "val": "Val"}  # Test publishes no masks
    scene_dirs = ("Urban", "Rural")
    images_dir = "images_png"
    masks_dir = "masks_png"
    split_names = ("train", "val")

    def __init__(self, root, table="aerial10", class_map=None, gsd=None, split=None, stems=None,
                 scenes: tuple[str, ...] | None = None):
        if scenes is not None:
            bad = [s for s in scenes if s not in self.scene_dirs]
            if bad or not scenes:
                raise ConfigError(f"loveda scenes {list(scenes)}: use one or both of {', '.join(self.scene_dirs)}")
            self.scene_dirs = tuple(scenes)
        super().__init__(root, table, class_map=class_map, gsd=gsd, split=split, stems=stems)

    def _verify(self) -> None:
        if not self.root.is_dir():
            raise LoveDANotFoundError(self.root, self.root)
        splits = [d for d in self.split_dirs.values() if (self.root / d).is_dir()]
        if not splits:
            hint = "Only Test/ is there, and LoveDA publishes no masks for it." if (self.root / "Test").is_dir() else ""
            raise LoveDANotFoundError(self.root, self.root / "Train", hint)
        for d in splits:
            scenes = [s for s in self.scene_dirs if (self.root / d / s).is_dir()]
            if not scenes:
                raise LoveDANotFoundError(self.root, self.root / d / self.scene_dirs[0],
                                          f"{self.root / d} holds none of {', '.join(self.scene_dirs)}.")
            for s in scenes:
                for sub in (self.images_dir, self.masks_dir):
                    if not (self.root / d / s / sub).is_dir():
                        raise LoveDANotFoundError(self.root, self.root / d / s / sub)

    def _find(self) -> list[Item]:
        items: list[Item] = []
        for split, d in self.split_dirs.items():
            for scene in self.scene_dirs:
                folder = self.root / d / scene
                if not folder.is_dir():
                    continue
                missing: list[str] = []
                for image in sorted(list_images(folder / self.images_dir, (".png",)), key=_natural):
                    mask = folder / self.masks_dir / image.name
                    if not mask.is_file():
                        missing.append(image.name)
                        continue
                    items.append(Item(f"{scene.lower()}_{image.stem}", image, mask, split))
                if missing:
                    raise DataError(
                        f"{folder / self.masks_dir}: no mask for {len(missing)} image(s) ({', '.join(missing[:5])}); "
                        f"each {self.images_dir}/<n>.png needs {self.masks_dir}/<n>.png: unzip the archive again"
                    )
        if not items:
            raise LoveDANotFoundError(self.root, self.root / "Train" / "Urban" / self.images_dir / "<n>.png",
                                      "The image folders hold no PNG tiles.")
        return items
