"""Reading images and masks of any mode, writing palette masks: the one place that touches pixels on disk."""

from __future__ import annotations

from pathlib import Path

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
