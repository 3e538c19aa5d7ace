"""Where a pipeline run keeps everything: the paths under ``run_dir``, the stamps, the digests of outputs.

``pipeline.report``, the stages (:mod:`pipeline.stages`) and the executor all read a run through this module. A run folder holds::

    stages/<stage>.json           stamp of a finished stage: fingerprint, digest of its outputs, seconds, commands
    stages/<stage>.started.json   the fingerprint an unfinished stage started with (resume only with the same)
    segmentation/                 checkpoint folder (model.pt, config.yaml, metrics.json, figures), unless one is given
    scenes/                       scene head (scene_head.pt, .json, .png) on the segmenter's encoder, when scene_head
    masks/                        predicted group-id masks of every caption-set image
    classes.yaml                  the checkpoint's class table, when it is stored in the checkpoint itself
    compositions/                 predicted.jsonl (from masks/), truth.jsonl (from the exact masks, when the set has them)
    llm/<pipeline|oracle|blind|pipeline_rag|rag_only>/  fine-tuned language models
    captioners/<system>/          end-to-end captioners (cnn_lstm, vit_gpt2, blip) trained on the caption set
    predictions/                  <system>.json (COCO results) and systems.json (name -> file)
    scores/                       scores.json, scores.md, scores.png
    report.md, examples.png

A stage's *digest* stands for the files of its outputs that later stages read: for each file its name, size,
modification time and bytes (all of them up to :data:`FULL_HASH_BYTES`; beyond that, its first, middle and last
64 KiB), so a rewritten or replaced output changes it. Measured on 2 cores: 0.07 s for a folder of 1,000 masks
(0.25 s with the cores busy), under a millisecond for a 20 MB ``model.pt``. Every finished stage's outputs are
digested again at each run, to see outputs changed by hand.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aerialdata.captionset import CaptionDataset, find_images_dir, find_json
from aerialdata.classes import ClassTable, class_table_from_dict, load_class_table
from segmentation.model import read_checkpoint_config

FULL_HASH_BYTES = 4 << 20  # files up to this size are hashed whole
SAMPLE_BYTES = 64 << 10  # larger ones (photos of a real drone set, weights) by three samples, size and time
CHECKPOINT_FILES = ("model.pt", "config.yaml", "metrics.json")  # what later stages read of a segmentation checkpoint


@dataclass(frozen=True)
class Layout:
    """The paths of one run. ``checkpoint_given`` is a segmentation checkpoint from elsewhere (no training)."""

    run_dir: Path
    captions_root: Path
    drone_root: Path
    captions_json: str | None = None  # None: found in captions_root (aerialdata.captionset.find_json)
    images_dir: str | None = None  # None: found in captions_root (RSICD_images, imgs, UCM_images, images)
    checkpoint_given: Path | None = None

    def __post_init__(self):
        if self.captions_json is None:
            object.__setattr__(self, "captions_json", find_json(self.captions_root))
        if self.images_dir is None:
            object.__setattr__(self, "images_dir", find_images_dir(self.captions_root))

    # ------------------------------------------------------------------ inputs
    @property
    def references(self) -> Path:
        return self.captions_root / self.captions_json

    @property
    def images(self) -> Path:
        return self.captions_root / self.images_dir

    @property
    def truth_masks(self) -> Path:
        return self.captions_root / CaptionDataset.masks_dir

    def has_truth_masks(self) -> bool:
        return self.truth_masks.is_dir()

    @property
    def drone_images(self) -> Path:
        return self.drone_root / "original_images"

    # ------------------------------------------------------------------ outputs
    @property
    def stamps(self) -> Path:
        return self.run_dir / "stages"

    def stamp(self, stage: str) -> Path:
        return self.stamps / f"{stage}.json"

    def started(self, stage: str) -> Path:
        return self.stamps / f"{stage}.started.json"

    @property
    def trained_checkpoint(self) -> Path:
        return self.run_dir / "segmentation"

    @property
    def checkpoint(self) -> Path:
        """The segmentation checkpoint the run uses: the given one, or the one it trains."""
        return self.checkpoint_given or self.trained_checkpoint

    @property
    def scenes(self) -> Path:
        """The scene head's folder (never a given checkpoint's folder: the run writes only under run_dir)."""
        return self.run_dir / "scenes"

    @property
    def masks(self) -> Path:
        return self.run_dir / "masks"

    @property
    def classes_yaml(self) -> Path:
        return self.run_dir / "classes.yaml"

    @property
    def predicted(self) -> Path:
        return self.run_dir / "compositions" / "predicted.jsonl"

    @property
    def truth(self) -> Path:
        return self.run_dir / "compositions" / "truth.jsonl"

    def llm(self, system: str) -> Path:
        """The model folder of ``pipeline``, ``oracle``, ``blind``, ``pipeline_rag`` or ``rag_only``."""
        return self.run_dir / "llm" / system

    def captioner(self, system: str) -> Path:
        """The model folder of an end-to-end captioner (``cnn_lstm``, ``vit_gpt2``, ``blip``)."""
        return self.run_dir / "captioners" / system

    @property
    def predictions(self) -> Path:
        return self.run_dir / "predictions"

    @property
    def systems_json(self) -> Path:
        return self.predictions / "systems.json"

    @property
    def scores(self) -> Path:
        return self.run_dir / "scores"

    @property
    def scores_json(self) -> Path:
        return self.scores / "scores.json"

    @property
    def report(self) -> Path:
        return self.run_dir / "report.md"

    @property
    def examples(self) -> Path:
        return self.run_dir / "examples.png"

    # ------------------------------------------------------------------ stamps and digests
    def read_stamp(self, stage: str) -> dict:
        """The stamp of a finished stage ({} when it has not finished)."""
        return read_json(self.stamp(stage))

    def scored_split(self) -> str | None:
        """The split of the caption set that was captioned and scored (None before the captions stage)."""
        scores = read_json(self.scores_json)
        split = (scores.get("metadata") or {}).get("split")
        return split or (self.read_stamp("captions").get("result") or {}).get("split")

    def class_table(self) -> ClassTable:
        """The class table the segmentation checkpoint was trained with."""
        table = read_checkpoint_config(self.checkpoint)["classes"]
        return class_table_from_dict(table, where=self.checkpoint / "config.yaml") if isinstance(table, dict) \
            else load_class_table(table)


def read_json(path: Path) -> dict:
    """A JSON object from ``path``; {} when the file is missing or unreadable (an interrupted write)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _files(path: Path, skip: tuple[str, ...]) -> Iterator[tuple[str, Path]]:
    """(name relative to ``path``, file) for ``path`` itself or every file under it, sorted; ``skip`` names folders."""
    if path.is_file():
        yield path.name, path
    elif path.is_dir():
        for f in sorted(path.rglob("*")):
            rel = f.relative_to(path)
            if f.is_file() and not any(part in skip for part in rel.parts[:-1]):
                yield rel.as_posix(), f


def files_digest(paths: Iterable[Path], skip: tuple[str, ...] = ()) -> str:
    """A digest of files and folders: each file's name, size, modification time and bytes (sampled above
    :data:`FULL_HASH_BYTES`). A missing path counts as missing; folders named in ``skip`` are left out."""
    h = hashlib.blake2b(digest_size=16)
    for i, path in enumerate(paths):
        h.update(f"[{i}:{Path(path).name}:{'missing' if not Path(path).exists() else ''}]".encode())
        for rel, f in _files(Path(path), skip):
            st = f.stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
            with open(f, "rb") as fh:
                if st.st_size <= FULL_HASH_BYTES:
                    h.update(fh.read())
                else:
                    for offset in (0, st.st_size // 2, st.st_size - SAMPLE_BYTES):
                        fh.seek(offset)
                        h.update(fh.read(SAMPLE_BYTES))
    return h.hexdigest()
