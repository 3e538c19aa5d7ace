"""What the web app computes, without Streamlit: the models of one app process, one image's analysis (mask, composition,
prompt, every system's caption, overlay), captions of an edited composition, and batch results as rows.

The chain is the one ``pipeline.caption`` runs (``load_segmenter`` -> ``Segmenter.predict`` -> ``extract`` ->
``Captioner.caption``, the provenance notice, ``draw_overlay``), on an image held in memory::

    from app.core import Models, Settings
    models = Models(Settings())                    # runs/demo's segmenter, LM, baselines and end-to-end captioners
    a = models.analyse("pond_3.jpg", data=open("pond_3.jpg", "rb").read())
    a.captions                                     # {"chain (greedy)": "...", "chain (beam 3)": "...", ...}
    models.caption_record(edited_record)           # the systems that read a composition, on an edited one

Every problem with an image (not an image, truncated, too large) is a :class:`segcap.errors.DataError` whose message
names the file as the user called it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aerialdata.captionset import CaptionDataset
from aerialdata.images import image_size, read_rgb
from captioners.model import load_captioner
from composition.extract import extract
from composition.schema import read_jsonl
from composition.show import draw_overlay
from composition.text import to_prompt
from llm.generate import Captioner
from pipeline.baselines import NearestNeighbour, template_caption
from segcap.errors import ConfigError, DataError, SegcapError
from segcap.options import Group, PositiveFloat, PositiveInt, field_problems
from segmentation.model import load_segmenter
from segmentation.provenance import provenance_notice

DEMO = Path("runs/demo")
APP_MAX_PIXELS = 24_000_000  # segmented while the page waits; beyond, the page says what to do (pipeline.caption)
MAX_UPLOAD_MB = 200  # Streamlit's own upload limit, set by python -m app (server.maxUploadSize)
MEMO_SIZE = 64  # analyses and edited captions kept per app process

GREEDY = "chain (greedy)"
POOL = "chain (consensus pool)"  # pipeline_pool: the demo's best chain system, when the model folder has its index
POOL_CANDIDATES = 5  # beam candidates and ...
POOL_NEIGHBOURS = 5  # ... training images whose captions vote, as pipeline.run's defaults (consensus, retrieval_k)
NEAREST = "nearest neighbour"
TEMPLATE = "template (rules)"


def beam_name(num_beams: int) -> str:
    return f"chain (beam {num_beams})"


@dataclass(frozen=True)
class Settings(Group):
    """App settings: the models of an app process and the page's defaults (``python -m app`` and the page script
    take them as flags: ``--num-beams 2``).

    Attributes:
        segmentation: segmentation checkpoint folder (segmentation.train --out).
        llm: caption LM folder (llm.finetune --out).
        run_dir: a pipeline.run folder: its compositions/predicted.jsonl and caption set give the nearest-neighbour
            baseline, its captioners/<system>/ the end-to-end captioners; null for the chain alone.
        captions: the caption set (dataset_rsicd.json or its folder) for the demo images, their reference captions
            and the nearest baseline's training captions; default: the one the run was made from.
        num_beams: the chain's beam search width (the page can change it).
        scale: resize factor before segmenting: the images' metres per pixel over the caption set's (the page can
            change it).
        threads: torch CPU threads of the app process; empty (null): torch's default. One is as fast for one
            224 px image on 2 cores, and steadier when other work shares them; more helps large images.
    """

    segmentation: Path = DEMO / "segmentation"
    llm: Path = DEMO / "llm" / "pipeline"
    run_dir: Path | None = DEMO
    captions: Path | None = None
    num_beams: PositiveInt = 3
    scale: PositiveFloat = 1.0
    threads: PositiveInt | None = 1

    def problems(self) -> list[str]:
        """Every problem with these settings (empty when the app can start): the typed check of the bounded
        fields (:func:`segcap.options.field_problems`), then the folders."""
        out = field_problems(self, "app settings")
        if not (Path(self.segmentation) / "model.pt").is_file():
            out.append(f"--segmentation {self.segmentation}: no model.pt there; give a segmentation.train output "
                       "folder (make demo trains one in runs/demo/segmentation)")
        if not Path(self.llm).is_dir():
            out.append(f"--llm {self.llm}: not a folder; give an llm.finetune output folder (make demo trains one "
                       "in runs/demo/llm/pipeline)")
        if self.run_dir is not None and not Path(self.run_dir).is_dir():
            out.append(f"--run-dir {self.run_dir}: not a folder; give a pipeline.run output folder, or --run-dir "
                       "null for the chain alone")
        if self.captions is not None and not Path(self.captions).exists():
            out.append(f"--captions {self.captions}: not found; give a caption set (dataset_rsicd.json or its folder)")
        return out


@dataclass
class Analysis:
    """One image through every system. ``seconds`` times each step (``total``: from the bytes to every caption).

    ``overlay`` (a PNG) is drawn on demand by :meth:`Models.overlay`, after the captions are on the page; the pixels
    it needs are kept until then (never in batches)."""

    name: str
    key: str  # the image's bytes, name, scale and beams: an edit of its composition belongs to this analysis
    width: int
    height: int
    record: dict
    prompt: str
    captions: dict[str, str]
    references: list[str]
    notice: str | None
    overlay: bytes | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    pixels: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)  # (rgb, mask) for the overlay


class Models:
    """The models of one app process, loaded once (the page holds it with ``st.cache_resource``). Loading sets the
    process's torch threads to ``settings.threads`` (unless None: torch's default).

    Missing optional parts (no caption set, no training compositions for the nearest baseline, no end-to-end
    captioner) are not errors: ``notes`` says what is left out and why.
    """

    def __init__(self, settings: Settings):
        problems = settings.problems()
        if problems:
            raise ConfigError(problems)
        self.settings = settings
        if settings.threads:  # one thread: as fast for one 224 px image, and steady when other work shares the cores
            torch.set_num_threads(settings.threads)
        # the scene head: a pipeline run keeps it in run_dir/scenes (scene_head: true); else the checkpoint's own
        run_head = None if settings.run_dir is None else Path(settings.run_dir) / "scenes"
        head = run_head if run_head is not None and (run_head / "scene_head.pt").is_file() else "auto"
        self.segmenter = load_segmenter(settings.segmentation, scene_head=head)
        self.captioner = Captioner(settings.llm)
        self.notes: list[str] = []
        self.caption_set = self._caption_set()
        self.references: dict[str, list[str]] = {}
        self.demo_images: list[Path] = []
        if self.caption_set is not None:
            folder = self.caption_set.root / self.caption_set.images_dir
            self.references = {it.filename: list(it.sentences) for it in self.caption_set.items}
            self.demo_images = [folder / it.filename for it in self.caption_set.items
                                if it.split == "test" and (folder / it.filename).is_file()]
        self.nearest = self._nearest()
        self.end_to_end = self._end_to_end()
        self._lock = threading.RLock()  # one image at a time through the models: sessions share two cores
        self._memo: OrderedDict[str, object] = OrderedDict()

    # ------------------------------------------------------------------ loading
    def _caption_set(self) -> CaptionDataset | None:
        path = self.settings.captions
        if path is None and self.settings.run_dir is not None:  # the caption set the run was made from
            stamp = Path(self.settings.run_dir) / "stages" / "data.json"
            try:
                named = json.loads(stamp.read_text())["result"]["captions"]
            except (OSError, ValueError, KeyError, TypeError):
                named = None
            path = Path(named) if named and Path(named).exists() else None
        if path is None:
            self.notes.append("no caption set (--captions, or the run's stages/data.json): no demo images, no "
                              "reference captions, no nearest-neighbour baseline")
            return None
        try:
            return CaptionDataset(path)
        except SegcapError as e:
            self.notes.append(f"caption set left out: {e}")
            return None

    def _nearest(self) -> NearestNeighbour | None:
        run_dir = self.settings.run_dir
        compositions = None if run_dir is None else Path(run_dir) / "compositions" / "predicted.jsonl"
        if compositions is None or not compositions.is_file() or self.caption_set is None:
            self.notes.append("nearest-neighbour baseline left out: it needs the run's compositions/predicted.jsonl "
                              "and its caption set" + (f" ({compositions} not found)" if compositions else ""))
            return None
        try:
            records = {Path(r["image"]).stem: r for r in read_jsonl(compositions)}
            train = [it for it in self.caption_set.items if it.split == "train" and Path(it.filename).stem in records]
            return NearestNeighbour([records[Path(it.filename).stem] for it in train], [it.sentences for it in train],
                                    self.segmenter.table.num_classes)
        except (SegcapError, ValueError) as e:
            self.notes.append(f"nearest-neighbour baseline left out: {e}")
            return None

    def _end_to_end(self) -> dict[str, object]:
        run_dir = self.settings.run_dir
        folder = None if run_dir is None else Path(run_dir) / "captioners"
        systems = sorted(p for p in folder.iterdir() if p.is_dir()) if folder is not None and folder.is_dir() else []
        out = {}
        for path in systems:
            try:
                out[path.name] = load_captioner(path)
            except Exception as e:  # noqa: BLE001 - one captioner that does not load leaves the others on the page
                self.notes.append(f"end-to-end captioner {path.name} left out: {e.__class__.__name__}: {e}")
        return out

    # ------------------------------------------------------------------ what the page shows
    def systems(self, num_beams: int | None = None) -> list[str]:
        """The caption columns, in page order."""
        beams = self.settings.num_beams if num_beams is None else num_beams
        return [GREEDY, *([beam_name(beams)] if beams > 1 else []), *([POOL] if self.pools else []),
                *([NEAREST] if self.nearest else []), TEMPLATE, *(f"{s} (end-to-end)" for s in self.end_to_end)]

    @property
    def pools(self) -> bool:
        """Whether the chain's consensus pool is offered: the model folder keeps the training compositions' index
        (every folder llm.finetune has written since 2026-12-01)."""
        return self.captioner.index is not None

    def caption_record(self, record: dict, num_beams: int | None = None) -> dict[str, str]:
        """Captions of one composition record by every system that reads one (the chain, the baselines)."""
        beams = self.settings.num_beams if num_beams is None else num_beams
        key = "record:" + json.dumps(record, sort_keys=True) + f":{beams}"
        found = self._recall(key)
        if found is not None:
            return dict(found)
        with self._lock:
            out = {GREEDY: self.captioner.caption([record], num_beams=1)[0]}
            if beams > 1:
                out[beam_name(beams)] = self.captioner.caption([record], num_beams=beams)[0]
            if self.pools:
                pool = min(POOL_NEIGHBOURS, len(self.captioner.index))  # a tiny training set has fewer images
                out[POOL] = self.captioner.caption([record], consensus=POOL_CANDIDATES, pool=pool)[0]
        if self.nearest is not None:
            out[NEAREST] = self.nearest.caption([record])[0]
        out[TEMPLATE] = template_caption(record)
        self._keep(key, out)
        return dict(out)

    def analyse(self, name: str, data: bytes | None = None, path: Path | None = None, scale: float | None = None,
                num_beams: int | None = None, overlay: bool = True) -> Analysis:
        """Segment, describe and caption one image: an upload's bytes (``data``, called ``name``) or a file.

        ``overlay``: keep the pixels for :meth:`overlay` (the page); a batch does not."""
        scale = self.settings.scale if scale is None else scale
        beams = self.settings.num_beams if num_beams is None else num_beams
        if data is None:
            if path is None:
                raise ValueError("analyse needs data or path")
            try:
                data = Path(path).read_bytes()
            except OSError as e:
                raise DataError(f"{name}: cannot read it ({e.strerror or e})") from e
        if len(data) > MAX_UPLOAD_MB << 20:
            raise DataError(f"{name}: {len(data) / 2**20:.0f} MB is more than the app takes ({MAX_UPLOAD_MB} MB); "
                            "caption it with python -m pipeline.caption")
        key = f"image:{hashlib.sha1(data).hexdigest()}:{name}:{scale:g}:{beams}:{overlay}"
        found = self._recall(key)
        if found is not None:
            return found
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        origin = path if path is not None else self._same_as_caption_set(name, data)
        rgb = self._read(name, data, scale)
        seconds["read"] = time.perf_counter() - start
        with self._lock:
            t = time.perf_counter()
            mask = self.segmenter.predict([rgb], scale=scale)[0]
            scenes = self.segmenter.scenes([rgb], scale=scale)  # None without a scene head
            seconds["segment"] = time.perf_counter() - t
        t = time.perf_counter()
        record = extract(mask, self.segmenter.table, image=name, scenes=scenes[0] if scenes else None)
        seconds["compose"] = time.perf_counter() - t
        t = time.perf_counter()
        captions = self.caption_record(record, beams)
        for system, model in self.end_to_end.items():
            with self._lock:
                try:
                    captions[f"{system} (end-to-end)"] = model.caption([rgb], num_beams=1)[0]
                except Exception as e:  # noqa: BLE001 - the other systems' captions still reach the page
                    captions[f"{system} (end-to-end)"] = f"(failed: {e.__class__.__name__}: {e})"
        seconds["caption"] = time.perf_counter() - t
        seconds["total"] = time.perf_counter() - start
        ref_name = Path(origin).name if origin is not None else None
        refs = self.references.get(ref_name, []) if ref_name is not None and self._in_caption_set(origin) else []
        notice = provenance_notice(self.settings.segmentation, self.segmenter.config,
                                   [origin] if origin is not None else [Path(tempfile.gettempdir()) / name])
        result = Analysis(name=name, key=hashlib.sha1(key.encode()).hexdigest()[:16], width=int(rgb.shape[1]), height=int(rgb.shape[0]),
                          record=record, prompt=to_prompt(record), captions=captions, references=refs, notice=notice,
                          seconds=seconds, pixels=(rgb, mask) if overlay else None)
        self._keep(key, result)
        return result

    def overlay(self, a: Analysis) -> bytes | None:
        """The overlay PNG of ``a`` (mask, circles, centres, labels, legend), drawn once; None without pixels."""
        with self._lock:
            if a.overlay is None and a.pixels is not None:
                t = time.perf_counter()
                a.overlay = overlay_png(a.record, *a.pixels, self.segmenter.table)
                a.seconds["overlay"] = time.perf_counter() - t
                a.pixels = None
            return a.overlay

    def batch(self, items: list[tuple[str, bytes | None, Path | None]],
              progress: Callable[[int, int, str], None] | None = None) -> tuple[list[Analysis], list[str]]:
        """Analyse many images (no overlays): the results, and one message per image that could not be read."""
        done, failed = [], []
        for i, (name, data, path) in enumerate(items):
            if progress is not None:
                progress(i, len(items), name)
            try:
                done.append(self.analyse(name, data=data, path=path, overlay=False))
            except DataError as e:
                failed.append(str(e))
        if progress is not None:
            progress(len(items), len(items), "")
        return done, failed

    # ------------------------------------------------------------------ helpers
    def _read(self, name: str, data: bytes, scale: float) -> np.ndarray:
        """The upload as (H, W, 3) uint8 by ``read_rgb`` (any format it takes), refused when too large to wait for."""
        suffix = Path(name).suffix.lower()[:10] if Path(name).suffix.isascii() else ""
        fd, tmp = tempfile.mkstemp(prefix="segcap_app_", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            try:
                w, h = image_size(tmp)
                if w * h * scale * scale > APP_MAX_PIXELS:
                    raise DataError(
                        f"{name}: {w}x{h} ({w * h / 1e6:.0f} MP) at scale {scale:g} is more than the app segments "
                        f"while you wait ({APP_MAX_PIXELS / 1e6:.0f} MP); lower the scale in the sidebar (the image's "
                        "metres per pixel over the caption set's), shrink it, or caption it with python -m "
                        "pipeline.caption, which segments large images in tiles")
                return read_rgb(tmp)
            except DataError as e:
                raise DataError(str(e).replace(tmp, name)) from None
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _in_caption_set(self, path: Path) -> bool:
        cs = self.caption_set
        return cs is not None and Path(path).resolve().parent == (cs.root / cs.images_dir).resolve()

    def _same_as_caption_set(self, name: str, data: bytes) -> Path | None:
        """The caption set's file of the same name and bytes (an upload of a demo image), else None."""
        cs = self.caption_set
        if cs is None or Path(name).name not in self.references:
            return None
        twin = cs.root / cs.images_dir / Path(name).name
        try:
            return twin if twin.stat().st_size == len(data) and twin.read_bytes() == data else None
        except OSError:
            return None

    def _recall(self, key: str):
        with self._lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        return None

    def _keep(self, key: str, value) -> None:
        with self._lock:
            self._memo[key] = value
            while len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)


def overlay_png(record: dict, rgb: np.ndarray, mask: np.ndarray, table) -> bytes:
    """``composition.show.draw_overlay`` (mask, circles, centres, labels, legend) as PNG bytes."""
    fd, tmp = tempfile.mkstemp(prefix="segcap_overlay_", suffix=".png")
    os.close(fd)
    try:
        draw_overlay(record, rgb, Path(tmp), table, mask=mask)
        return Path(tmp).read_bytes()
    finally:
        Path(tmp).unlink(missing_ok=True)


def class_rows(record: dict) -> list[dict]:
    """The record's classes as table rows (what ``composition.show.table_text`` prints)."""
    return [{"class": c["name"], "id": c["id"], "percent": c["percent"], "position": c["position"],
             "regions": c["regions"], "largest %": c["largest_region_percent"],
             "centre": f"({c['center'][0]:.2f}, {c['center'][1]:.2f})", "radius": round(c["radius"], 3),
             "centroid": f"({c['centroid'][0]:.2f}, {c['centroid'][1]:.2f})",
             "elongation": round(c["elongation"], 2)} for c in record["classes"]]


def batch_rows(results: list[Analysis]) -> list[dict]:
    """One row per image: its captions by system, its prompt."""
    return [{"image": a.name, **a.captions, "prompt": a.prompt} for a in results]


def rows_csv(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def results_json(results: list[Analysis]) -> str:
    """The batch as JSON: ``pipeline.caption --json``'s fields (image, caption, composition) and every caption."""
    return json.dumps([{"image": a.name, "caption": a.captions[GREEDY], "captions": a.captions,
                        "composition": a.record} for a in results], indent=1)


def log(message: str) -> None:
    """A line on the server's console (the page shows the user's message)."""
    print(message, file=sys.stderr, flush=True)
