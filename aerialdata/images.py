"""Reading images and masks of any mode, writing palette masks: the one place that touches pixels on disk.

Photos are read the way they are shown: a JPEG stored sideways with an EXIF orientation tag (phones, many drones)
is turned upright on reading (:func:`read_rgb`, :func:`read_rgb_scaled`), and :func:`image_size` gives the upright
size, so masks, compositions (left, top, width, height) and overlays follow what a viewer shows. Masks are never
turned: a mask PNG has no orientation tag.

Images of more than :data:`MAX_PIXELS` pixels are refused with a message saying how to cut them (PIL's own guard
against decompression bombs, at its default); below it, any size is read, and segmentation runs large images in
tiles (:meth:`segmentation.model.Segmenter.predict`).

**Which reader.** Pillow reads what it reads exactly: 8-bit pictures of any mode, and single-band 16-bit, 32-bit and
float images. Files whose bands Pillow would cut to 8 bits or drop are read by another library instead: multi-band
TIFFs of more than 8 bits a band, and TIFFs with more bands than Pillow's mode holds (Pillow shows a 4-band 16-bit
TIFF as RGB, keeping the high byte of each value: 12-bit data comes out as 0..15, near black) or with a layout Pillow
cannot open (2 bands, 5 and more, float bands) go to rasterio (GDAL), imported only then; without rasterio such a file
is refused with a message saying to install it, never read wrongly. 16-bit RGB(A) PNGs go to OpenCV. The EXIF
orientation is applied to the files Pillow reads (GeoTIFFs and 16-bit PNGs carry none in practice).

**Bands.** ``bands`` (:func:`read_rgb`, :func:`read_rgb_scaled`; ``--bands`` in ``pipeline.caption``) chooses which of
a file's bands make the picture, numbered from 1 as in GDAL: three numbers are red, green and blue (``(4, 3, 2)``:
near infrared shown as red, a false-colour picture); one number is read as grey. By default, a file of 3 bands or
more gives its first three (RGB, as every RGB file stores them), a one-band file is grey, and a 2-band file is
refused (which band is what cannot be told; ``bands=(1,)`` reads band 1 as grey) unless its second band is alpha. A
band number the file does not have is refused with a message naming the file and its band count. Pillow's bands are
the mode's: RGB 3, RGBA 4 (alpha is band 4), L 1, LA 2; palette images are expanded to RGB(A) first. Without
``bands`` an 8-bit picture is read exactly as before (RGBA composited on black, palette and grey as RGB); with
``bands``, the bands asked for are taken as stored (no compositing).

**Scaling to 8 bits** (:func:`scale_limits`, :func:`scale_to_uint8`; over the chosen bands together, so that their
colour balance stays):

- 8-bit values are kept as they are (byte for byte).
- Unsigned integers that use the top half of their type's range (16-bit data above 32767: a 16-bit export of a
  photo, already stretched for viewing) are scaled linearly from 0..65535 (0..2^32-1 for wider data), so that a
  16-bit picture reads as its 8-bit export would.
- Float data within 0..1 (reflectance) is scaled linearly from 0..1.
- Anything else (10-, 11-, 12- and 14-bit sensor counts stored in 16 bits, reflectance scaled to 0..10000, signed
  data) is stretched linearly from its 2nd to its 98th percentile, computed over the chosen bands together (on a
  regular grid of at most about a million pixels), values beyond clipped. Why: the bit depth of such data is rarely
  in the file (a TIFF says 16 bits for 12-bit data), the smallest 2^k-1 above the maximum guesses it wrongly for dark
  tiles (a 12-bit tile of water whose maximum is 900 would pass for 10-bit and be brightened four times), and even
  the true range leaves the picture dark, because the ground reflects a small part of what a sensor can count. The
  2-98 % cut is what GIS viewers show such data with (QGIS's default for multi-band rasters), so the segmenter sees
  what a person would. One cut for the three bands, not one a band: a per-band stretch would grey out the colours
  (water blue, vegetation green) that the classes rest on. The price: the stretch follows each image's content, so a
  tile of a scene may come out brighter or darker than its neighbour.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, TiffImagePlugin, UnidentifiedImageError

from segcap.atomic import atomic_path
from segcap.errors import ConfigError, DataError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS  # PIL refuses larger images (decompression-bomb guard): 178,956,970 pixels
EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 5..8 store the picture turned by 90 degrees
_TRANSPOSED = (5, 6, 7, 8)
STRETCH_PERCENTILES = (2.0, 98.0)  # the cut for data that does not use its type's range (module docstring)
_STRETCH_SAMPLE = 1_000_000  # pixels the percentiles are computed on, at most about (a regular grid)
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
_RASTERIO_FIX = "install rasterio (pip install rasterio), which segcap uses for such files, and run again"


def _too_large_message(path: Path, pixels: int | str) -> str:
    return (f"{path}: {pixels} pixels is more than segcap reads ({2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels, PIL's "
            "decompression-bomb "
            "guard); cut it into tiles first (e.g. gdal_retile.py -ps 8192 8192, or vips dzsave) or shrink it (vips "
            "resize); below the limit, large images are segmented in tiles")


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
        raise DataError(_too_large_message(path, int(found.group(1)) if found else "too many")) from e
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


# ---------------------------------------------------------------- bands
def band_problems(bands: Sequence[int] | None, option: str = "--bands") -> list[str]:
    """What is wrong with a ``bands`` choice, before any file is read: one band (grey) or three (red, green, blue),
    each a band number from 1 (as in GDAL)."""
    if bands is None:
        return []
    bands = list(bands)
    if len(bands) not in (1, 3) or not all(isinstance(b, int) and not isinstance(b, bool) for b in bands):
        return [f"{option} {' '.join(map(str, bands)) or '(none)'}: give 3 band numbers (red green blue, e.g. "
                f"{option} 4 3 2) or 1 (read as grey)"]
    if min(bands) < 1:
        return [f"{option} {' '.join(map(str, bands))}: band numbers start at 1 (as in GDAL), e.g. {option} 1 2 3"]
    return []


def _checked_bands(bands: Sequence[int] | None) -> tuple[int, ...] | None:
    problems = band_problems(bands, "bands")
    if problems:
        raise ConfigError(problems)
    return None if bands is None else tuple(int(b) for b in bands)


def _pick_bands(path: Path, count: int, bands: tuple[int, ...] | None, second_is_alpha: bool = False
                ) -> tuple[int, ...]:
    """The 1-based bands that make the picture of a file of ``count`` bands (module docstring, Bands)."""
    if bands is None:
        if count >= 3:
            return (1, 2, 3)
        if count == 1 or second_is_alpha:
            return (1,)
        raise DataError(f"{path} has {count} bands, and an RGB picture needs 3; choose bands with --bands: --bands 1 "
                        "reads band 1 as grey, --bands 1 2 2 shows band 1 as red and band 2 as green and blue")
    missing = sorted({b for b in bands if b > count})
    if missing:
        these = (f"band {missing[0]} does not exist" if len(missing) == 1
                 else f"bands {', '.join(map(str, missing))} do not exist")
        fix = "--bands 1 reads it as grey" if count == 1 else f"choose --bands from 1 to {count}" + (
            " (--bands 1: band 1 as grey)" if count < 3 else "")
        raise DataError(f"{path} has {count} band{'s' if count != 1 else ''}, so {these}; {fix}")
    return bands


# ---------------------------------------------------------------- scaling
def scale_limits(arr: np.ndarray) -> tuple[float, float] | None:
    """The values that become 0 and 255 for (H, W, C) ``arr`` of any dtype, all bands together (module docstring,
    Scaling); None for 8-bit data, which is kept as it is.

    Full-range integers: (0, 2^16-1) or (0, 2^32-1); floats within 0..1: (0, 1); anything else: its 2nd and 98th
    percentiles, measured on a regular grid of at most about a million pixels. A reader of a whole scene in windows
    can measure them once (on a decimated read) and pass them to :func:`scale_to_uint8` for every window."""
    if arr.dtype == np.uint8 or arr.dtype == bool:
        return None
    if arr.dtype.kind in "ui" and arr.size:
        lo_v, hi_v = int(arr.min()), int(arr.max())
        if lo_v >= 0 and hi_v > 2**15 - 1:
            bits = 16 if hi_v <= 2**16 - 1 else 32
            if hi_v >= 2 ** (bits - 1):  # the top half of the range is used: a full-range picture
                return (0.0, float(2**bits - 1))
    if arr.dtype.kind == "f" and arr.size:
        with warnings.catch_warnings(), np.errstate(invalid="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # all NaN
            lo_f, hi_f = np.nanmin(arr), np.nanmax(arr)
        if lo_f >= 0 and hi_f <= 1:
            return (0.0, 1.0)
    # 1. a regular grid of at most about _STRETCH_SAMPLE pixels; 2. the percentiles over every band of it together
    step = max(1, math.ceil(math.sqrt(arr.shape[0] * arr.shape[1] / _STRETCH_SAMPLE)))
    sample = arr[::step, ::step].astype(np.float32)
    sample = sample[np.isfinite(sample)]
    if not sample.size:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, STRETCH_PERCENTILES)
    if hi <= lo:  # most pixels equal: the sample's whole range instead
        lo, hi = sample.min(), sample.max()
    return (float(lo), float(hi))


def scale_to_uint8(arr: np.ndarray, limits: tuple[float, float] | None = None) -> np.ndarray:
    """(H, W, C) of any dtype -> uint8 (module docstring, Scaling): 8-bit kept; else linear from ``limits`` (default:
    :func:`scale_limits` of ``arr``) to 0..255, rounded, clipped, NaN as 0. A flat image (one value) comes out black.
    Converted a band of rows at a time, so a large 16-bit image needs little more than its 8-bit result."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    lo, hi = limits if limits is not None else scale_limits(arr)
    gain = 255.0 / max(hi - lo, 1e-12)
    out = np.empty(arr.shape, np.uint8)
    for r in range(0, arr.shape[0], 1024):
        rows = (arr[r : r + 1024].astype(np.float32) - lo) * gain
        out[r : r + 1024] = np.clip(np.nan_to_num(np.rint(rows), nan=0.0), 0, 255)
    return out


def _to_picture(arr: np.ndarray, bands: tuple[int, ...]) -> np.ndarray:
    """The chosen bands of (H, W, C) ``arr`` as (H, W, 3) uint8: scaled together, one band repeated as grey."""
    arr = arr[..., [b - 1 for b in bands]]
    rgb = scale_to_uint8(arr)
    if rgb.shape[2] == 1:
        rgb = np.repeat(rgb, 3, axis=2)
    return np.ascontiguousarray(rgb)


# ---------------------------------------------------------------- readers
def _is_tiff(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) in _TIFF_MAGIC
    except OSError:
        return False


def _reader(im: Image.Image) -> str:
    """Which library reads an opened file exactly: ``pillow``, ``opencv`` (16-bit RGB(A) PNG) or ``rasterio``."""
    if im.format == "TIFF":
        samples = int(im.tag_v2.get(277, 1))
        bits = im.tag_v2.get(258, (8,))
        bits = max(bits) if isinstance(bits, tuple) and bits else int(bits or 8)
        if samples != len(im.getbands()) or (samples > 1 and bits > 8):
            return "rasterio"
    if im.format == "PNG" and im.mode in ("RGB", "RGBA") and any(";16" in str(t[3]) for t in im.tile):
        return "opencv"
    return "pillow"


def _high_depth(im: Image.Image) -> bool:
    """A single-band mode of more than 8 bits (I;16, I;16B, I;16S, I, F): scaled, not converted by Pillow."""
    return im.mode.startswith("I") or im.mode == "F"


def _pillow_bands(im: Image.Image) -> np.ndarray:
    """(H, W, C) of a Pillow image's bands as stored; palette expanded to RGB(A), 1-bit to 0/255."""
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "1":
        im = im.convert("L")
    arr = np.asarray(im)
    return arr[..., None] if arr.ndim == 2 else arr


def _opencv_bands(path: Path) -> np.ndarray:
    """(H, W, C) of a 16-bit PNG as stored, bands in RGB(A) order."""
    arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise DataError(f"{path}: not a readable image (OpenCV could not decode it); re-export it as JPEG or PNG")
    if arr.ndim == 2:
        return arr[..., None]
    return arr[..., [2, 1, 0, 3][: arr.shape[2]]] if arr.shape[2] in (3, 4) else arr


def _rasterio_read(path: Path, bands: tuple[int, ...] | None, why: str) -> np.ndarray:
    """The picture of a file that Pillow cannot read exactly (``why``: what it is, for the message without rasterio),
    read with rasterio: only the bands it needs."""
    try:
        import rasterio  # optional and heavy (GDAL): imported only for such files, so the data layer stays light
        from rasterio.enums import ColorInterp
        from rasterio.errors import NotGeoreferencedWarning, RasterioError
    except ImportError as e:
        raise DataError(f"{path}: {why}; {_RASTERIO_FIX}") from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a plain TIFF: its pixels are all we need
            with rasterio.open(path) as src:
                if src.width * src.height > 2 * (Image.MAX_IMAGE_PIXELS or 0):  # PIL's guard, as open_image
                    raise DataError(_too_large_message(path, src.width * src.height))
                alpha = src.count == 2 and src.colorinterp[1] == ColorInterp.alpha
                picked = _pick_bands(path, src.count, bands, second_is_alpha=alpha)
                order = sorted(set(picked))
                arr = np.moveaxis(src.read(order), 0, -1)  # (H, W, len(order))
    except RasterioError as e:
        raise DataError(f"{path}: not a readable image (rasterio: {e}); re-export it as GeoTIFF, JPEG or PNG") from e
    return _to_picture(arr, tuple(order.index(b) + 1 for b in picked))


def _describe_tiff(tags: TiffImagePlugin.ImageFileDirectory_v2) -> str:
    """'a TIFF of 4 bands of 16-bit values' (or of '32-bit float values'), from a TIFF's first directory of tags."""
    bits = tags.get(258, (8,))
    bits = max(bits) if isinstance(bits, tuple) and bits else bits
    fmt = tags.get(339, (1,))
    kind = " float" if 3 in (fmt if isinstance(fmt, tuple) else (fmt,)) else ""
    count = int(tags.get(277, 1))
    return f"a TIFF of {count} band{'s' if count != 1 else ''} of {bits}-bit{kind} values"


def _unopened_tiff(path: Path) -> str:
    """What a TIFF that Pillow cannot open holds, from its tags (Pillow parses them even so)."""
    try:
        with open(path, "rb") as f:
            tags = TiffImagePlugin.ImageFileDirectory_v2(f.read(8))
            f.seek(tags.next)
            tags.load(f)
        return f"{_describe_tiff(tags)}, which Pillow cannot open"
    except Exception:  # noqa: BLE001 - a broken header: rasterio, or its message, says more
        return "a TIFF that Pillow cannot open"


def read_rgb(path: str | Path, bands: Sequence[int] | None = None) -> np.ndarray:
    """Read any image as (H, W, 3) uint8 RGB, turned upright by its EXIF orientation.

    RGB and palette images convert directly; RGBA drops alpha (composited on black); grey is repeated to 3 channels;
    16-bit, 12-bit-in-16 and float data are scaled to 8 bits by the rule of the module docstring (Scaling);
    multi-band files (e.g. 4-band GeoTIFFs) give their first three bands, or the ``bands`` asked for.

    Args:
        path: the image file.
        bands: band numbers from 1 (as in GDAL): three for red, green and blue (e.g. ``(4, 3, 2)``), one for grey;
            None: the file's first three bands, or its one band as grey (module docstring, Bands).
    """
    path = Path(path)
    wanted = _checked_bands(bands)
    with contextlib.ExitStack() as stack:
        im = _open_or_tiff(path, stack)
        reader = _reader(im) if im is not None else "rasterio"
        if reader == "pillow":
            try:
                im.load()
                im = _upright(im)
                if wanted is None and not _high_depth(im):
                    return _to_rgb(im)  # 8-bit pictures: exactly as before
                arr = _pillow_bands(im)
            except (OSError, SyntaxError, ValueError) as e:
                raise DataError(f"{path}: not a readable image ({e.__class__.__name__}: {e}); re-export it as JPEG "
                                "or PNG") from e
            return _to_picture(arr, _pick_bands(path, arr.shape[2], wanted))
        why = (_unopened_tiff(path) if im is None
               else f"{_describe_tiff(im.tag_v2)}, which Pillow cannot read exactly" if im.format == "TIFF" else "")
    if reader == "opencv":
        arr = _opencv_bands(path)
        return _to_picture(arr, _pick_bands(path, arr.shape[2], wanted))
    return _rasterio_read(path, wanted, why)


def _open_or_tiff(path: Path, stack: contextlib.ExitStack) -> Image.Image | None:
    """The file opened by Pillow (closed with ``stack``), or None for a TIFF that Pillow cannot open (rasterio's)."""
    try:
        return stack.enter_context(open_image(path))
    except DataError:
        if path.is_file() and _is_tiff(path):
            return None
        raise


def _to_rgb(im: Image.Image) -> np.ndarray:
    """An 8-bit Pillow picture as (H, W, 3) uint8: alpha composited on black, the rest converted by Pillow."""
    mode = im.mode
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
    path = Path(path)
    with contextlib.ExitStack() as stack:
        im = _open_or_tiff(path, stack)
        if im is not None:
            w, h = im.size
            return (h, w) if orientation(im) in _TRANSPOSED else (w, h)
    try:
        import rasterio  # a TIFF that Pillow cannot open (module docstring, Which reader)
        from rasterio.errors import NotGeoreferencedWarning, RasterioError
    except ImportError as e:
        raise DataError(f"{path}: {_unopened_tiff(path)}; {_RASTERIO_FIX}") from e
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                return src.width, src.height
    except RasterioError as e:
        raise DataError(f"{path}: not a readable image (rasterio: {e}); re-export it as GeoTIFF, JPEG or PNG") from e


def scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """(width, height) after scaling by ``scale``, at least 1 pixel each."""
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def read_rgb_scaled(path: str | Path, scale: float | None = None, bands: Sequence[int] | None = None) -> np.ndarray:
    """Read an image as (H, W, 3) uint8 RGB resized by ``scale`` (None or 1: full size); ``bands`` as in
    :func:`read_rgb`.

    JPEGs are decoded at a reduced size directly (libjpeg's DCT scaling, ``PIL.Image.draft``) when ``scale`` <= 0.5
    (and no ``bands`` are asked for), so a 6000x4000 photo asked for at 0.25 costs the decode of a 1500x1000 one; other
    formats are decoded in full. The result is resized with area averaging (shrinking) or bilinear (enlarging).
    """
    path = Path(path)
    if scale is None or scale == 1.0:
        return read_rgb(path, bands)
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    arr = None
    if bands is None and scale <= 0.5:
        with contextlib.ExitStack() as stack:
            im = _open_or_tiff(path, stack)
            if im is not None and im.format == "JPEG":
                turned = orientation(im) in _TRANSPOSED
                target = scaled_size((im.size[1], im.size[0]) if turned else im.size, scale)  # upright (width, height)
                try:
                    im.draft("RGB", (target[1], target[0]) if turned else target)  # 1/2, 1/4 or 1/8, never below target
                    im.load()
                    arr = np.asarray(_upright(im).convert("RGB"))
                except (OSError, SyntaxError, ValueError) as e:
                    raise DataError(f"{path}: not a readable image ({e.__class__.__name__}: {e}); re-export it as "
                                    "JPEG or PNG") from e
    if arr is None:
        arr = read_rgb(path, bands)
        target = scaled_size((arr.shape[1], arr.shape[0]), scale)
    if (arr.shape[1], arr.shape[0]) != target:
        interp = cv2.INTER_AREA if target[0] < arr.shape[1] else cv2.INTER_LINEAR
        arr = cv2.resize(arr, target, interpolation=interp)
    return np.ascontiguousarray(arr)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an id mask to (width, height) with nearest neighbour (ids stay ids)."""
    if (mask.shape[1], mask.shape[0]) == tuple(size):
        return mask
    return cv2.resize(mask, tuple(size), interpolation=cv2.INTER_NEAREST)
