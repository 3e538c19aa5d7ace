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
area averaging; masks are resized with nearest neighbour so that ids stay ids.
"""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from aerialdata.classes import DRONE_CLASSES, ClassTable, load_class_table
from aerialdata.images import IMAGE_SUFFIXES, read_mask, read_rgb
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


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image from its header, without decoding the pixels."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            return im.size
    except FileNotFoundError as e:
        raise DataError(f"{path}: image not found") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e.__class__.__name__}: {e}); re-export it as JPEG or PNG") from e


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(width, height) after scaling by ``scale``, at least 1 pixel each."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def read_rgb_scaled(path: str | Path, scale: float | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB resized by ``scale`` (None or 1: full size).

    JPEGs are decoded at a reduced size directly (DCT scaling) when ``scale`` <= 0.5, so a 6000x4000 photo asked for at
    0.25 costs the decode of a 1500x1000 one.
    """
    path = Path(path)
    if scale is None or scale == 1.0:
        return read_rgb(path)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    target = None
    try:
        with Image.open(path) as im:
            target = scaled_size(im.size, scale)
            if im.format == "JPEG" and scale <= 0.5:
                im.draft("RGB", target)  # decodes at 1/2, 1/4 or 1/8 of the size, never below target
                im.load()
                arr = np.asarray(im.convert("RGB"))
            else:
                arr = None
    except FileNotFoundError as e:
        raise DataError(f"{path}: image not found") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e.__class__.__name__}: {e}); re-export it as JPEG or PNG") from e
    if arr is None:
        arr = read_rgb(path)
    if (arr.shape[1], arr.shape[0]) != target:
        interp = cv2.INTER_AREA if target[0] < arr.shape[1] else cv2.INTER_LINEAR
        arr = cv2.resize(arr, target, interpolation=interp)
    return np.ascontiguousarray(arr)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an id mask to (width, height) with nearest neighbour (ids stay ids)."""
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    return cv2.resize(mask, tuple(size), interpolation=cv2.INTER_NEAREST)


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
    """

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
    ):
        self.root = Path(root)
        self.table = table if isinstance(table, ClassTable) else load_class_table(table)
        self.images_dir = images_dir or self.images_dir
        self.masks_dir = masks_dir or self.masks_dir
        self.scale = scale
        self._verify()
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
        ipath, mpath = self.image_paths[i], self.mask_paths[i]
        full = image_size(ipath)
        source = read_mask(mpath)
        if (source.shape[1], source.shape[0]) != full:
            raise DataError(
                f"{mpath}: mask is {source.shape[1]}x{source.shape[0]} but its image {ipath.name} is "
                f"{full[0]}x{full[1]}; masks must have the size of their image"
            )
        mask = self.table.group(source, where=mpath)
        image = read_rgb_scaled(ipath, scale)
        return image, resize_mask(mask, (image.shape[1], image.shape[0]))

    def __repr__(self) -> str:
        return f"DroneDataset(root={str(self.root)!r}, images={len(self)}, table={self.table.name!r})"
