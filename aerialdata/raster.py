"""GeoTIFF scenes read in windows: the header, the ground resolution, the tile grid, one tile's pixels, a thumbnail.

A scene of any size is never read whole: :func:`read_tile` reads one window (GDAL decodes only the blocks it
touches) and resamples it to the tile's size, :func:`thumbnail` reads a decimated copy for overviews, and GDAL's
block cache is held to :data:`GDAL_CACHE_MB` per process::

    info = scene_info("scene.tif")                       # header only: size, bands, CRS, transform, m/px
    tiles = tile_grid(info, target_gsd=0.5, tile_size=224, overlap=0.25)
    rgb, valid = read_tile(info, tiles[0])               # (224, 224, 3) uint8, (224, 224) bool (False: nodata)
    corners = footprint(info, tiles[0])                  # the tile's polygon in the scene's CRS

Bands: ``bands`` (1-based, as GDAL counts) picks 1 band (grey, repeated to RGB as :func:`aerialdata.images.read_rgb`
does) or 3; by default the bands whose colour interpretation is red, green and blue, else bands 1-3, else band 1.
Values: scaled to 0-255 by the rules of :func:`aerialdata.images.scale_limits` (8-bit kept, full-range 16-bit
linear, other data a 2-98 % stretch of the chosen bands together), measured once per scene on a decimated read of its
valid pixels, so neighbouring tiles match.
Nodata: the scene's nodata value, internal mask or alpha band marks pixels invalid (``valid`` False); a pixel is
valid when every chosen band is. Rasterio is the optional ``scale`` extra (``pip install -e '.[scale]'``).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from aerialdata.images import scale_limits, scale_to_uint8
from segcap.errors import ConfigError, DataError

try:  # the `scale` extra; pipeline.archive names it when it is missing
    import rasterio
    from rasterio.enums import ColorInterp, MaskFlags, Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.windows import Window
except ImportError:  # pragma: no cover - checked by pipeline.archive before any use
    rasterio = None

GDAL_CACHE_MB = 64  # GDAL's block cache per process (its default is 5% of the memory, per process)
STRETCH_SAMPLE = 1024  # the long side of the decimated read the stretch is measured on
M_PER_DEGREE_LAT = 110_574.0  # WGS84, near enough for a ground resolution
M_PER_DEGREE_LON_EQUATOR = 111_320.0


@dataclass(frozen=True)
class SceneInfo:
    """What the tiling and reading of one scene need, from its header (picklable: sent to the workers).

    Args:
        path: absolute path of the raster.
        name: its file name.
        id: a digest of path, size and modification time (a changed file is a new scene).
        width, height, count: pixels and bands.
        dtype: the bands' data type.
        bands: the chosen bands, 1-based (1 or 3 of them).
        crs: the CRS as ``EPSG:n`` or WKT; None when the raster has none.
        transform: the affine pixel -> CRS transform (a, b, c, d, e, f).
        gsd: metres per pixel (from the transform and the CRS's units, or given); None when unknown.
        stretch: (low, high) mapped to 0 and 255 for non-8-bit bands; None for 8-bit ones.
    """

    path: str
    name: str
    id: str
    width: int
    height: int
    count: int
    dtype: str
    bands: tuple[int, ...]
    crs: str | None
    transform: tuple[float, ...]
    gsd: float | None
    stretch: tuple[float, float] | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Tile:
    """One tile of a scene: its grid place, its window in scene pixels and the size it is read at."""

    row: int
    col: int
    x: int  # window column offset
    y: int  # window row offset
    w: int  # window width in scene pixels
    h: int
    out_w: int  # pixels of the tile as segmented (the window resampled to the target ground resolution)
    out_h: int

    @property
    def name(self) -> str:
        return f"r{self.row:04d}_c{self.col:04d}"


def require_rasterio() -> None:
    if rasterio is None:
        raise ConfigError("reading GeoTIFF scenes needs rasterio, which is in the scale extra: "
                          "pip install -e '.[scale]'")


def _env():
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def scene_id(path: Path) -> str:
    st = path.stat()
    return hashlib.blake2b(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode(), digest_size=6).hexdigest()


def scene_info(path: str | Path, bands: tuple[int, ...] | list[int] | None = None, georeference: bool = True,
               scene_gsd: float | None = None) -> SceneInfo:
    """The header of raster ``path`` checked for tiling: a :class:`DataError` when it is not a raster (or has no CRS
    while ``georeference`` asks for footprints), a :class:`ConfigError` when ``bands`` names a band it lacks.

    ``scene_gsd`` overrides the ground resolution the transform gives (metres per pixel)."""
    require_rasterio()
    path = Path(path).resolve()
    try:
        with _env(), rasterio.open(path) as ds:
            count, width, height = ds.count, ds.width, ds.height
            dtype = ds.dtypes[0]
            crs = ds.crs
            transform = tuple(ds.transform)[:6]
            interp = list(ds.colorinterp)
            chosen = _choose_bands(path, count, interp, bands)
            crs_text = None if crs is None else (crs.to_string() or crs.to_wkt())
            if crs is None and georeference:
                raise DataError(f"{path}: the raster has no CRS, so its tiles cannot get footprints; give a "
                                "georeferenced GeoTIFF (gdal_edit.py -a_srs EPSG:XXXX sets one), or pass "
                                "--no-georeference to caption it without footprints")
            gsd = scene_gsd if scene_gsd is not None else _ground_resolution(ds)
            stretch = None if dtype == "uint8" else _stretch(ds, chosen, path)
    except RasterioIOError as e:
        why = str(e).split("\n")[0][:200]
        raise DataError(f"{path}: not a raster GDAL can read ({why}); give a GeoTIFF (or any GDAL raster), or put "
                        "plain image tiles in a folder and give the folder") from e
    if width < 1 or height < 1:
        raise DataError(f"{path}: the raster is empty ({width}x{height})")
    return SceneInfo(path=str(path), name=path.name, id=scene_id(path), width=width, height=height, count=count,
                     dtype=dtype, bands=chosen, crs=crs_text, transform=transform, gsd=gsd, stretch=stretch)


def _choose_bands(path: Path, count: int, interp: list, bands) -> tuple[int, ...]:
    if bands:
        bad = [b for b in bands if not 1 <= int(b) <= count]
        if bad:
            raise ConfigError(f"--bands {' '.join(str(b) for b in bands)}: {path} has {count} band"
                              f"{'s' if count != 1 else ''} (1..{count}), so band {bad[0]} does not exist; "
                              "give 3 bands for colour (e.g. --bands 1 2 3) or 1 for grey")
        if len(bands) not in (1, 3):
            raise ConfigError(f"--bands takes 1 band (grey) or 3 (red green blue), got {len(bands)}")
        return tuple(int(b) for b in bands)
    rgb = [interp.index(c) + 1 for c in (ColorInterp.red, ColorInterp.green, ColorInterp.blue) if c in interp]
    if len(rgb) == 3:
        return tuple(rgb)
    return (1, 2, 3) if count >= 3 else (1,)


def _ground_resolution(ds) -> float | None:
    """Metres per pixel: the transform's pixel size in the CRS's units, converted (projected CRS: its linear unit;
    geographic: degrees at the scene's centre latitude); None without a CRS."""
    a, b, _, d, e, _ = tuple(ds.transform)[:6]
    px_x, px_y = math.hypot(a, d), math.hypot(b, e)
    if ds.crs is None:
        return None
    if ds.crs.is_geographic:
        lat = d * ds.width / 2 + e * ds.height / 2 + tuple(ds.transform)[5]  # the scene's centre
        coslat = max(1e-6, math.cos(math.radians(max(-90.0, min(90.0, lat)))))
        return (px_x * M_PER_DEGREE_LON_EQUATOR * coslat + px_y * M_PER_DEGREE_LAT) / 2
    try:
        factor = ds.crs.linear_units_factor[1]
    except Exception:  # noqa: BLE001 - a CRS without linear units: take metres
        factor = 1.0
    return (px_x + px_y) / 2 * factor


def _stretch(ds, bands: tuple[int, ...], path: Path) -> tuple[float, float]:
    """(low, high) of the chosen bands' valid values over a decimated copy of the whole scene, by the rules
    :func:`aerialdata.images.scale_limits` reads one image with (in the bands' own type)."""
    data, valid, _ = decimated(ds, bands, STRETCH_SAMPLE)
    values = data[:, valid] if valid.any() else data.reshape(len(bands), -1)  # (B, N)
    values = values[:, np.isfinite(values).all(0)]
    if values.size == 0:
        raise DataError(f"{path}: no finite pixel values in the chosen bands {list(bands)}")
    dtype = np.dtype(ds.dtypes[bands[0] - 1])
    native = (np.round(values) if dtype.kind in "ui" else values).astype(dtype).T[None]  # (1, N, B)
    lo, hi = scale_limits(native) or (0.0, 255.0)
    return float(lo), float(max(hi, lo + 1e-6))


def decimated(ds, bands: tuple[int, ...], max_side: int) -> tuple[np.ndarray, np.ndarray, int]:
    """The whole scene shrunk by an integer factor ``n`` (its long side at most ``max_side``): the mean of each
    n x n block's valid pixels per band (B, H/n, W/n) float32, whether the block has any (H/n, W/n), and ``n``.

    Read in strips of whole rows of blocks (GDAL's own decimating read with a small block cache decodes every block
    once per output row: minutes for a 5,000 px scene), so memory is one strip: for a 20,000 px wide scene of
    512 px blocks, 31 MB of 8-bit values and 125 MB of floats."""
    n = max(1, math.ceil(max(ds.width, ds.height) / max_side))
    th, tw = math.ceil(ds.height / n), math.ceil(ds.width / n)
    total = np.zeros((len(bands), th, tw), np.float32)
    count = np.zeros((th, tw), np.float32)
    rows = math.ceil(ds.block_shapes[0][0] / n) * n  # a row of blocks, rounded up to whole output rows
    for y in range(0, ds.height, rows):
        h = min(rows, ds.height - y)
        window = Window(0, y, ds.width, h)
        data = ds.read(list(bands), window=window)  # (B, h, W)
        valid = _valid(ds, bands, data, window).astype(np.float32)  # (h, W)
        data = data.astype(np.float32)
        ph, pw = math.ceil(h / n) * n - h, tw * n - ds.width  # pad to whole blocks (pads count as invalid)
        data = np.pad(data * valid, ((0, 0), (0, ph), (0, pw)))
        valid = np.pad(valid, ((0, ph), (0, pw)))
        r0, r1 = y // n, y // n + data.shape[1] // n
        total[:, r0:r1] = data.reshape(len(bands), -1, n, tw, n).sum((2, 4))
        count[r0:r1] = valid.reshape(-1, n, tw, n).sum((1, 3))
    return total / np.maximum(count, 1), count > 0, n


def _valid(ds, bands: tuple[int, ...], data: np.ndarray, window) -> np.ndarray:
    """(h, w) bool: every chosen band valid. From the values when the bands' masks are their nodata value (no second
    decode), else from GDAL's masks (internal mask, alpha band)."""
    flags = [ds.mask_flag_enums[b - 1] for b in bands]
    if all(f == [MaskFlags.all_valid] for f in flags):
        return np.ones(data.shape[1:], bool)
    if all(f == [MaskFlags.nodata] for f in flags) and all(ds.nodatavals[b - 1] is not None for b in bands):
        valid = np.ones(data.shape[1:], bool)
        for i, b in enumerate(bands):
            nodata = ds.nodatavals[b - 1]
            valid &= ~np.isnan(data[i]) if np.isnan(nodata) else data[i] != nodata
        return valid
    return ds.read_masks(list(bands), window=window).min(0) > 0


def tile_starts(size: int, window: int, stride: int) -> list[int]:
    """Window starts along one side: every ``stride`` px; the last window ends at the edge (shifted back, so every
    tile is whole); one window of the whole side when it is shorter than a window."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, stride))
    if starts[-1] + window < size:
        starts.append(size - window)
    return starts


def tile_grid(info: SceneInfo, target_gsd: float, tile_size: int, overlap: float = 0.0) -> list[Tile]:
    """The tiles of a scene at ``target_gsd`` metres per pixel: windows of ``tile_size`` px at that resolution
    (``tile_size x target_gsd / scene gsd`` scene pixels), overlapping by ``overlap`` (a fraction of the tile), in
    row order. A scene without a known ground resolution is taken to be at ``target_gsd``."""
    ratio = target_gsd / info.gsd if info.gsd else 1.0  # scene pixels per tile pixel
    win = max(1, round(tile_size * ratio))
    stride = max(1, round(win * (1.0 - overlap)))
    tiles = []
    for r, y in enumerate(tile_starts(info.height, win, stride)):
        for c, x in enumerate(tile_starts(info.width, win, stride)):
            w, h = min(win, info.width), min(win, info.height)
            out_w = tile_size if w == win else max(1, round(w / ratio))
            out_h = tile_size if h == win else max(1, round(h / ratio))
            tiles.append(Tile(r, c, x, y, w, h, out_w, out_h))
    return tiles


@functools.lru_cache(maxsize=4)
def _open(path: str, mtime_ns: int):
    """An open dataset per worker process (a batch of tiles reads the same scene); closed when evicted."""
    return rasterio.open(path)


def _dataset(info: SceneInfo):
    return _open(info.path, os.stat(info.path).st_mtime_ns)


def read_tile(info: SceneInfo, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """The tile's pixels as (out_h, out_w, 3) uint8 RGB and its valid mask (out_h, out_w) bool.

    The window is resampled to the tile's size by averaging (shrinking) or bilinearly (enlarging); nodata pixels
    are set to 0. Reads only the window's blocks."""
    require_rasterio()
    window = Window(tile.x, tile.y, tile.w, tile.h)
    shape = (len(info.bands), tile.out_h, tile.out_w)
    same = (tile.w, tile.h) == (tile.out_w, tile.out_h)
    resampling = Resampling.nearest if same else (Resampling.average if tile.w > tile.out_w else Resampling.bilinear)
    with _env():
        ds = _dataset(info)
        data = ds.read(list(info.bands), window=window, out_shape=shape, resampling=resampling)
        valid = _valid(ds, info.bands, data, window) if same else ds.read_masks(
            list(info.bands), window=window, out_shape=shape, resampling=Resampling.nearest).min(0) > 0
    return _to_rgb(data, info.stretch, valid), valid


def _to_rgb(data: np.ndarray, stretch: tuple[float, float] | None, valid: np.ndarray) -> np.ndarray:
    """(B, H, W) band values -> (H, W, 3) uint8; B is 1 (repeated) or 3."""
    if stretch is None:
        rgb = data.astype(np.uint8, copy=False)
    else:  # as aerialdata.images scales one image, with the scene's limits
        rgb = scale_to_uint8(data.transpose(1, 2, 0), stretch).transpose(2, 0, 1)
    if rgb.shape[0] == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    rgb = np.ascontiguousarray(rgb.transpose(1, 2, 0))
    rgb[~valid] = 0
    return rgb


def footprint(info: SceneInfo, tile: Tile) -> list[tuple[float, float]]:
    """The tile's window as a closed ring of its 4 corners in the scene's CRS (a rotated transform included)."""
    a, b, c, d, e, f = info.transform
    ring = [(tile.x, tile.y), (tile.x + tile.w, tile.y), (tile.x + tile.w, tile.y + tile.h), (tile.x, tile.y + tile.h)]
    pts = [(a * x + b * y + c, d * x + e * y + f) for x, y in ring]
    return [*pts, pts[0]]


def thumbnail(info: SceneInfo, max_side: int = 1024) -> tuple[np.ndarray, float]:
    """A decimated RGB copy of the whole scene (long side at most ``max_side``, :func:`decimated`) and its scale
    (thumbnail px per scene px); nodata is black. Memory: the thumbnail's and one strip's."""
    require_rasterio()
    with _env(), rasterio.open(info.path) as ds:
        data, valid, n = decimated(ds, info.bands, max_side)
    if info.stretch is None:
        data = np.round(data)
    return _to_rgb(data, info.stretch, valid), 1.0 / n
