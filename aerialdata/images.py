"""Reading images and masks of any mode, writing palette masks: the one place that touches pixels on disk."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from segcap.errors import DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def list_images(folder: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def read_rgb(path: str | Path) -> np.ndarray:
    """Read any image as (H, W, 3) uint8 RGB.

    RGB and palette images convert directly; RGBA drops alpha (composited on black); grey is repeated to 3 channels;
    16-bit and float images (e.g. GeoTIFF bands saved as I;16) are scaled by their own 0.5..99.5 percentiles.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
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
    except FileNotFoundError as e:
        raise DataError(f"{path}: image not found") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e.__class__.__name__}: {e}); re-export it as JPEG or PNG") from e


def read_mask(path: str | Path) -> np.ndarray:
    """Read a single-channel mask PNG (class ids per pixel, palette or grey) as (H, W) uint8."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "1"):
                raise DataError(
                    f"{path}: mask has mode {im.mode}; expected a single-channel PNG of class ids "
                    "(mode L or P), not a colour rendering"
                )
            arr = np.asarray(im)
    except FileNotFoundError as e:
        raise DataError(f"{path}: mask not found") from e
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
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
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint8), mode="L")
    if colors is not None:
        im = im.convert("P")
        pal = np.zeros((256, 3), dtype=np.uint8)
        pal[: len(colors)] = colors
        im.putpalette(pal.flatten().tolist())
    tmp = path.with_name(f".{path.name}.tmp")
    im.save(tmp, format="PNG")
    tmp.replace(path)
    return path


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

    JPEGs are decoded at a reduced size directly (libjpeg's DCT scaling, ``PIL.Image.draft``) when ``scale`` <= 0.5,
    so a 6000x4000 photo asked for at 0.25 costs the decode of a 1500x1000 one; other formats are decoded in full.
    The result is resized with area averaging (shrinking) or bilinear (enlarging).
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
