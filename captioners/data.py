"""The caption set as the captioners read it: a Karpathy-split JSON (RSICD, UCM, Sydney, Flickr8k/30k unchanged),
its images folder, the images of one split, checked before any work, and images as arrays of one size.

The images folder is ``images`` when given (relative to the JSON's folder, or absolute); otherwise the first of
:data:`IMAGE_FOLDERS` beside the JSON that holds the set's first image (RSICD's ``RSICD_images``, Flickr8k's
``Flicker8k_Dataset`` or ``Images``, Flickr30k's ``flickr30k_images``, UCM/Sydney's ``imgs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from aerialdata.captionset import CaptionDataset, CaptionImage
from aerialdata.images import image_size, read_rgb
from segcap.errors import DataError

CACHE_BYTES = 1 << 30  # images resized for training are kept in memory up to this size, else read each time
IMAGE_FOLDERS = ("RSICD_images", "Flicker8k_Dataset", "Images", "flickr30k_images", "imgs", "images")
SHOWN = 5  # missing files named in a message


def open_caption_set(captions: str | Path, images: str | Path | None = None) -> CaptionDataset:
    """The caption set (every split) with its images folder resolved as the module docstring says."""
    ds = CaptionDataset(captions)
    if images is not None:
        return CaptionDataset(captions, images_dir=str(images))
    first = ds.items[0].filename if ds.items else None
    for name in IMAGE_FOLDERS:
        folder = ds.root / name
        if folder.is_dir() and (first is None or (folder / first).is_file()):
            return CaptionDataset(captions, images_dir=name)
    return ds


def split_items(ds: CaptionDataset, split: str) -> list[CaptionImage]:
    """The images of ``split``, in file order (may be empty)."""
    return [it for it in ds.items if it.split == split]


def empty_split_problem(ds: CaptionDataset, split: str, option: str) -> str:
    present = sorted({it.split for it in ds.items})
    return (f"{ds.json_path}: no images in split {split!r} (splits present: {', '.join(present) or 'none'}); "
            f"choose another --{option.replace('_', '-')}")


def missing_images_problem(ds: CaptionDataset, splits: dict[str, Sequence[CaptionImage]]) -> str | None:
    """One message naming the images of ``splits`` (split -> its images) that are not files; None when all are."""
    missing = [it.filename for items in splits.values() for it in items if not ds.image_path(it.filename).is_file()]
    if not missing:
        return None
    folder = ds.root / ds.images_dir
    total = sum(len(items) for items in splits.values())
    names = " and ".join(s for s, items in splits.items() if items)
    shown = ", ".join(missing[:SHOWN]) + (f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else "")
    where = f"{folder} does not exist" if not folder.is_dir() else f"not found in {folder}"
    return (f"{len(missing)} of the {total} {names} images of {ds.json_path} are missing ({where}): {shown}; "
            "pass --images with the folder that holds them (relative to the JSON's folder, or absolute)")


def unreadable_images_problem(ds: CaptionDataset, splits: dict[str, Sequence[CaptionImage]]) -> str | None:
    """One message naming the images of ``splits`` that exist but are no readable image (an empty file, another kind
    of file: each header is opened, no pixel decoded), with how many of the split's images they are; None when all
    are readable. Missing files are :func:`missing_images_problem`'s."""
    bad: list[str] = []
    total = 0
    for items in splits.values():
        total += len(items)
        for it in items:
            path = ds.image_path(it.filename)
            if not path.is_file():
                continue
            try:
                image_size(path)
            except DataError as e:
                bad.append(str(e))
    if not bad:
        return None
    names = " and ".join(s for s, items in splits.items() if items)
    every = "all " if len(bad) == total else ""
    shown = "; ".join(bad[:SHOWN]) + (f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN else "")
    return (f"{every}{len(bad)} of the {total} {names} images of {ds.json_path} are not readable images: {shown}; "
            "replace them with the original image files (JPEG, PNG or TIFF)")


def check_image(image: np.ndarray, index: int = 0) -> np.ndarray:
    """``image`` if it is an (H, W, 3) uint8 RGB array, else a DataError saying what it is."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        what = (f"an array of shape {image.shape} and dtype {image.dtype}" if isinstance(image, np.ndarray)
                else type(image).__name__)
        raise DataError(f"images[{index}] is {what}; pass (H, W, 3) uint8 RGB arrays (aerialdata.images.read_rgb "
                        "reads any file so)")
    return image


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` resized to ``size`` x ``size`` (area averaging when shrinking, bilinear when enlarging)."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interp = cv2.INTER_AREA if size < min(h, w) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def read_resized(ds: CaptionDataset, items: Sequence[CaptionImage], size: int) -> np.ndarray:
    """The images of ``items`` as one (N, size, size, 3) uint8 array."""
    out = np.empty((len(items), size, size, 3), dtype=np.uint8)
    for i, it in enumerate(items):
        out[i] = resize(read_rgb(ds.image_path(it.filename)), size)
    return out


class ImageStore:
    """The images of ``items`` resized to ``size``: kept in memory when they fit in ``max_bytes`` (read once), else
    read from disk at each access.

    Args:
        ds: the caption set (for the image paths).
        items: the images, in the order :meth:`get` indexes them.
        size: square size in pixels.
        max_bytes: the memory the resized images may take.
    """

    def __init__(self, ds: CaptionDataset, items: Sequence[CaptionImage], size: int, max_bytes: int = CACHE_BYTES):
        self.ds, self.items, self.size = ds, list(items), size
        self.in_memory = len(self.items) * size * size * 3 <= max_bytes
        self._array = read_resized(ds, self.items, size) if self.in_memory else None

    def __len__(self) -> int:
        return len(self.items)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        """(len(indices), size, size, 3) uint8."""
        if self._array is not None:
            return self._array[list(indices)]
        return read_resized(self.ds, [self.items[i] for i in indices], self.size)

    def chunks(self, n: int = 64, stop: int | None = None):
        """The images in order, ``n`` at a time (the first ``stop`` only)."""
        end = len(self) if stop is None else min(stop, len(self))
        for i in range(0, end, n):
            yield self.get(range(i, min(end, i + n)))
