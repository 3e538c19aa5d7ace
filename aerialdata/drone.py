"""Reader for the aerial semantic drone dataset format (24 source ids), grouped through a class table.

On disk (folder names are defaults and can be changed)::

    <root>/original_images/<stem>.jpg          RGB photos (the real set: 6000x4000 JPEG)
    <root>/label_images_semantic/<stem>.png    uint8, one source class id (0..23) per pixel, same size as the photo
    <root>/class_dict_seg.csv                  optional: name, r, g, b (checked against the 24 known classes)

Usage::

    from aerialdata.drone import DroneDataset
    ds = DroneDataset("data/synthetic/drone", "seed10")
    image, mask = ds[0]                     # (H, W, 3) uint8 RGB, (H, W) uint8 group ids
    image, mask = ds.load(0, scale=0.25)    # decoded at a quarter of the size (JPEG DCT scaling: cheap on 6000x4000)

Huge photos are never decoded at full size when a smaller scale is asked for: JPEG files are decoded with
libjpeg's DCT scaling (``PIL.Image.draft``) to the nearest power-of-two size above the target, then resized with
area averaging; masks are resized with nearest neighbour so that ids stay ids (:func:`aerialdata.images.read_rgb_scaled`,
:func:`aerialdata.images.resize_mask`, importable from here too).

The reader is one :class:`aerialdata.sources.LabelledSource` (``kind: drone``): every group of the class table is
labelled (``provides``), there is no published split, and the ground resolution is the one given, else the synthetic
marker's (``segcap_synthetic.json``, written by ``synthetic.generate``), else unknown (None): the real set's photos
are taken 5-30 m above ground, a few centimetres per pixel, and say which in no file.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from aerialdata.classes import DRONE_CLASSES, ClassTable, load_class_table
from aerialdata.images import (  # noqa: F401  (the resizers: importable from here, as before)
    IMAGE_SUFFIXES,
    image_size,
    read_rgb_scaled,
    resize_mask,
    scaled_size,
)
from aerialdata.labelled import check_gsd, load_pair, read_synthetic_marker
from segcap.errors import DataError, DatasetNotFoundError


class DroneDatasetNotFoundError(DatasetNotFoundError):
    """The drone dataset root, or one of its expected folders, is missing."""

    def __init__(self, root: Path, missing: Path, hint: str = ""):
        super().__init__(
            f"drone segmentation dataset not found: {missing} does not exist (searched root {root}). "
            f"Expected {root}/{DroneDataset.images_dir}/<stem>.jpg and {root}/{DroneDataset.masks_dir}/<stem>.png; "
            "point --data-root at such a folder, or create the synthetic one with "
            "`python -m synthetic.generate --out data/synthetic` (then --data-root data/synthetic/drone)"
            + (f". {hint}" if hint else "")
        )


class DroneDataset:
    """Image/mask pairs of a drone-format dataset, masks mapped from source ids to the table's group ids.

    Items are ``(image, mask)``: (H, W, 3) uint8 RGB and (H, W) uint8 group ids of the same size.

    Args:
        root: dataset folder holding ``original_images/`` and ``label_images_semantic/``.
        table: class table (a :class:`ClassTable`, or a name such as ``seed10`` / a YAML path).
        stems: only these file stems (in this order); None keeps every image that has a mask, sorted by name.
        scale: default resize factor of :meth:`__getitem__` (None: full size).
        images_dir: folder of photos inside ``root``.
        masks_dir: folder of source-id masks inside ``root``.
        gsd: ground resolution in metres per pixel; None: the synthetic marker's, else unknown (None).
    """

    name = "drone"
    splits = None  # the drone set publishes no split
    images_dir = "original_images"
    masks_dir = "label_images_semantic"
    class_dict = "class_dict_seg.csv"
    mask_suffix = ".png"

    def __init__(
        self,
        root: str | Path,
        table: ClassTable | str | Path = "seed10",
        stems: list[str] | None = None,
        scale: float | None = None,
        images_dir: str | None = None,
        masks_dir: str | None = None,
        gsd: float | None = None,
    ):
        self.root = Path(root)
        self.table = table if isinstance(table, ClassTable) else load_class_table(table)
        self.images_dir = images_dir or self.images_dir
        self.masks_dir = masks_dir or self.masks_dir
        self.scale = scale
        self._verify()
        marker = read_synthetic_marker(self.root)
        self.synthetic = marker is not None
        given = check_gsd(gsd, "drone source gsd")
        marked = float(marker["gsd"]) if marker and marker.get("gsd") is not None else None
        self.gsd: float | None = given if given is not None else marked
        self.provides: tuple[int, ...] = tuple(range(self.table.num_classes))
        found = self._pairs()
        if stems is not None:
            unknown = [s for s in stems if s not in found]
            if unknown:
                raise DataError(f"{self.root}: no image/mask pair for stem(s) {unknown[:5]}")
            found = {s: found[s] for s in stems}
        self.stems: list[str] = list(found)
        self.image_paths: list[Path] = [found[s] for s in self.stems]
        self.mask_paths: list[Path] = [self.root / self.masks_dir / f"{s}{self.mask_suffix}" for s in self.stems]

    # ---------------------------------------------------------------- files
    def _verify(self) -> None:
        """Check that the root and its folders exist, and that class_dict_seg.csv (if any) lists the known classes."""
        if not self.root.is_dir():
            raise DroneDatasetNotFoundError(self.root, self.root)
        for sub in (self.images_dir, self.masks_dir):
            if not (self.root / sub).is_dir():
                raise DroneDatasetNotFoundError(self.root, self.root / sub)
        csv_path = self.root / self.class_dict
        if csv_path.is_file():
            self._check_class_dict(csv_path)

    @staticmethod
    def _check_class_dict(path: Path) -> None:
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = [r for r in csv.reader(f) if r]
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{path}: not a readable CSV ({e})") from e
        if rows and not rows[0][-1].strip().lstrip("-").isdigit():
            rows = rows[1:]  # header: name, r, g, b
        names = [r[0].strip().lower() for r in rows]
        expected = [n for n, _ in DRONE_CLASSES]
        if names != expected:
            raise DataError(
                f"{path}: lists classes {names[:6]}... ({len(names)}); expected the drone dataset's {len(expected)} "
                f"classes in id order ({', '.join(expected[:4])}, ...). Mask ids would mean something else: "
                "remap the masks to these ids, or remove the CSV if the masks already use them"
            )

    def _pairs(self) -> dict[str, Path]:
        images = sorted(
            p for p in (self.root / self.images_dir).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not images:
            raise DroneDatasetNotFoundError(
                self.root, self.root / self.images_dir / "*.jpg", "The images folder holds no images"
            )
        pairs: dict[str, Path] = {}
        missing: list[str] = []
        for p in images:
            if p.stem in pairs:
                raise DataError(f"{p}: two images share the stem {p.stem!r} ({pairs[p.stem].name}); rename one")
            if not (self.root / self.masks_dir / f"{p.stem}{self.mask_suffix}").is_file():
                missing.append(p.name)
                continue
            pairs[p.stem] = p
        if missing:
            raise DataError(
                f"{self.root / self.masks_dir}: no mask for {len(missing)} image(s) ({', '.join(missing[:5])}); "
                f"each original_images/<stem>.jpg needs {self.masks_dir}/<stem>.png"
            )
        return pairs

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.stems)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.load(i, self.scale)

    def size(self, i: int) -> tuple[int, int]:
        """(width, height) of image ``i`` at full size, from its header."""
        return image_size(self.image_paths[i])

    def load(self, i: int, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Image ``i`` and its group-id mask, both resized by ``scale`` (None: full size).

        Raises :class:`DataError` naming the file for an unreadable image or mask, a mask whose size differs from its
        image, or mask ids outside 0..23.
        """
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        return load_pair(self.image_paths[i], self.mask_paths[i], self.table.group, scale)

    def __repr__(self) -> str:
        return (f"DroneDataset(root={str(self.root)!r}, images={len(self)}, table={self.table.name!r}, gsd={self.gsd}, "
                f"synthetic={self.synthetic})")
