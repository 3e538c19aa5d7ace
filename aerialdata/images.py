"""Reading images and masks of any mode, writing palette masks: the one place that touches pixels on disk.

Photos are read the way they are shown: a JPEG stored sideways with an EXIF orientation tag (phones, many drones)
is turned upright on reading (:func:`read_rgb`, :func:`read_rgb_scaled`), and :func:`image_size` gives the upright
size, so masks, compositions (left, top, width, height) and overlays follow what a viewer shows. Masks are never
turned: a mask PNG has no orientation tag.

Images of more than :data:`MAX_PIXELS` pixels are refused with a message saying how to cut them (PIL's own guard
against decompression bombs, at its default); below it, any size is read, and segmentation runs large images in
tiles (:meth:`segmentation.model.Segmenter.predict`).
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segcap.atomic import atomic_path
from segcap.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS  # PIL refuses larger images (decompression-bomb guard): 178,956,970 pixels
EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 5..8 store the picture turned by 90 degrees
_TRANSPOSED = (5, 6, 7, 8)


@contextlib.contextmanager
def open_image(path: str | Path, what: str = "image") -> Iterator[Image.Image]:
    """``PIL.Image.open`` with one :class:`DataError` per way it fails: missing, a folder, too large, unreadable."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not {'an' if what[0] in 'aeiou' else 'a'} {what} file; give the {what} "
                        "files inside it")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # up to MAX_PIXELS is fine here
            im = Image.open(path)
    except FileNotFoundError as e:
        raise DataError(f"{path}: {what} not found") from e
    except Image.DecompressionBombError as e:
        found = re.search(r"\((\d+) pixels\)", str(e))
        raise DataError(f"{path}: {int(found.group(1)) if found else 'too many'} pixels is more than segcap reads "
                        f"({2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels, PIL's decompression-bomb guard); cut it "
                        "into tiles first (e.g. "
                        "gdal_retile.py -ps 8192 8192, or vips dzsave) or shrink it (vips resize); below the limit, "
                        "large images are segmented in tiles") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable {what} ({e.__class__.__name__}: {e}); re-export it as "
                        + ("JPEG or PNG" if what == "image" else "PNG")) from e
    with im:
        yield im


def orientation(im: Image.Image) -> int:
    """The EXIF orientation of an opened image (1, upright, when it has none or an odd value)."""
    try:
        value = im.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: treat the picture as upright
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(im: Image.Image) -> Image.Image:
    """The picture as shown: turned by its EXIF orientation (a no-op for upright pictures)."""
    return ImageOps.exif_transpose(im) if orientation(im) != 1 else im


def list_images(folder: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read any image as (H, W, 3) uint8 RGB, turned upright by its EXIF orientation.

    RGB and palette images convert directly; RGBA drops alpha (composited on black); grey is repeated to 3 channels;
    16-bit and float images (e.g. GeoTIFF bands saved as I;16) are scaled by their own 0.5..99.5 percentiles.
    """
    path = Path(path)
    with open_image(path) as im:
        try:
            im.load()
            return _to_rgb(_upright(im))
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{path}: not a readable image ({e.__class__.__name__}: {e}); re-export it as JPEG or "
                            "PNG") from e


def _to_rgb(im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im).astype(np.float32)
        lo, hi = np.percentile(arr, [0.5, 99.5]) if arr.size else (0.0, 1.0)
        arr = np.clip((arr - lo) / max(hi - lo, 1e-6), 0, 1) * 255
        arr = arr.astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "RGBA" or mode == "LA" or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(bg, im)
    return np.asarray(im.convert("RGB"))


def read_mask(path: str | Path) -> np.ndarray:
    """Read a single-channel mask PNG (class ids per pixel, palette or grey) as (H, W) uint8."""
    path = Path(path)
    with open_image(path, "mask") as im:
        if im.mode not in ("L", "P", "I", "I;16", "1"):
            raise DataError(
                f"{path}: mask has mode {im.mode}; expected a single-channel PNG of class ids "
                "(mode L or P), not a colour rendering"
            )
        try:
            im.load()
            arr = np.asarray(im)
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"{path}: not a readable mask PNG ({e})") from e
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise DataError(f"{path}: mask values out of 0..255")
        arr = arr.astype(np.uint8)
    return arr


def write_mask(path: str | Path, mask: np.ndarray, colors: np.ndarray | None = None) -> Path:
    """Write (H, W) uint8 ids as a PNG; with ``colors`` ((N, 3) uint8) as a palette PNG that viewers show in colour.

    The pixel values stay the class ids either way, so :func:`read_mask` returns ``mask`` unchanged.
    Written to a temporary name first and renamed, so a reader never sees half a file.
    """
    path = Path(path)
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L")
    if colors is not None:
        im = im.convert("P")
        pal = np.zeros((256, 3), dtype=np.uint8)
        pal[: len(colors)] = colors
        im.putpalette(pal.flatten().tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image as shown (EXIF orientation applied), from its header, without decoding pixels."""
    with open_image(path) as im:
        w, h = im.size
        return (h, w) if orientation(im) in _TRANSPOSED else (w, h)


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(width, height) after scaling by ``scale``, at least 1 pixel each."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def read_rgb_scaled(path: str | Path, scale: float | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB resized by ``scale`` (None or 1: full size).

    JPEGs are decoded at a reduced size directly (libjpeg's DCT scaling, ``PIL.Image.draft``) when ``scale`` <= 0.5,
    so a 6000x4000 photo asked for at 0.25 costs the decode of a 1500x1000 one; other formats are decoded in full.
    The result is resized with area averaging (shrinking) or bilinear (enlarging).
    """
    path = Path(path)
    if scale is None or scale == 1.0:
        return read_rgb(path)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    arr = None
    with open_image(path) as im:
        turned = orientation(im) in _TRANSPOSED
        target = scaled_size((im.size[1], im.size[0]) if turned else im.size, scale)  # upright (width, height)
        if im.format == "JPEG" and scale <= 0.5:
            try:
                im.draft("RGB", (target[1], target[0]) if turned else target)  # 1/2, 1/4 or 1/8, never below target
                im.load()
                arr = np.asarray(_upright(im).convert("RGB"))
            except (OSError, SyntaxError, ValueError) as e:
                raise DataError(f"{path}: not a readable image ({e.__class__.__name__}: {e}); re-export it as "
                                "JPEG or PNG") from e
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
