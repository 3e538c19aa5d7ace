"""Segment a folder of images with a trained checkpoint: one palette PNG of group ids per image.

    python -m segmentation.predict --checkpoint runs/segmentation --images data/synthetic/rsicd/RSICD_images \\
        --out runs/masks
    python -m segmentation.predict --checkpoint runs/segmentation --images photos/ --out masks/ \\
        --overlays overlays/ --scale 0.25              # drone photos: bring them to the model's ground resolution
    python -m segmentation.predict ... --shard 0/4     # this machine does every 4th file, starting with the first

When the checkpoint has a scene head (``scene_head.pt`` in its folder, or the folder ``--scene-head`` names; see
``python -m segmentation.scene``), ``<out>/scenes.json`` holds each image's 3 most probable scenes, keyed by the mask's
stem: ``{"schema": "segcap.scenes/1", "classes": [...], "head": {...}, "images": {"<stem>": [{"name": "airplane",
"probability": 0.931}, ...]}}``; a rerun keeps the entries of the same head and adds the missing ones.
``--scene-head null`` writes none (and removes a scenes.json of an earlier run).

``<out>/<stem>.png`` holds the group ids (a palette PNG that viewers show in the class colours; read it back with
``aerialdata.images.read_mask``). Masks already in ``out`` are skipped, so an interrupted run resumes where it
stopped; ``--overwrite`` redoes them. A file that cannot be read is reported and skipped (``--strict``: stop, exit 2);
when every image to segment fails, the run exits 2 naming how many (listed in ``<out>/failed.json``).
Images are decoded in DataLoader workers while the network runs; images of the same size are batched.
A checkpoint trained on synthetic scenes only (or one that does not record its training data) is named in one note
on stderr before the work (:mod:`segmentation.provenance`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from aerialdata.images import band_problems, list_images, read_rgb, write_mask
from segcap.atomic import atomic_path, check_writable, write_json
from segcap.cli import run
from segcap.errors import ConfigError, DataError, DatasetNotFoundError
from segcap.options import NonNegativeInt, PositiveFloat, PositiveInt, checked
from segcap.progress import Progress
from segcap.workers import WorkerInit
from segmentation.model import SCENES_SCHEMA, find_scene_head, load_segmenter
from segmentation.plots import overlay_with_legend
from segmentation.provenance import provenance_notice


def parse_shard(shard: str | None) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N; None -> (0, 1)."""
    if shard is None:
        return 0, 1
    try:
        i, n = (int(v) for v in shard.split("/"))
    except ValueError:
        raise ConfigError(f"--shard {shard!r}: expected I/N, e.g. 0/4 (shard I of N, counted from 0)") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard {shard!r}: need 0 <= I < N, e.g. 0/4 .. 3/4")
    return i, n


def shard_files(files: list[Path], shard: str | None) -> list[Path]:
    """Every N-th file of the sorted list, starting at I: the N shards are disjoint and cover all files."""
    i, n = parse_shard(shard)
    return sorted(files)[i::n]


class ImageFiles(Dataset):
    """Decodes images in loader workers; an unreadable file yields its error message instead of pixels.
    Items are ``(index, rgb or None, error or None)``; batch them with :func:`as_list` (sizes differ)."""

    def __init__(self, files: list[Path], bands: list[int] | None = None):
        self.files = files
        self.bands = bands

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        try:
            return i, read_rgb(self.files[i], bands=self.bands), None
        except DataError as e:
            return i, None, str(e)


def as_list(batch):
    return batch


@checked
def main(
    checkpoint: Path,
    images: Path,
    out: Path,
    overlays: Path | None = None,
    scene_head: str | None = "auto",
    scale: PositiveFloat = 1.0,
    bands: list[int] | None = None,
    batch_size: PositiveInt = 16,
    shard: str | None = None,
    workers: NonNegativeInt = 1,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    threads: PositiveInt | None = None,
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Predict group-id masks for every image in a folder.

    Args:
        checkpoint: segmentation checkpoint folder (model.pt, config.yaml).
        images: folder of images (jpg, png, tif...).
        out: folder for the masks (<stem>.png, palette PNG of group ids).
        overlays: optional folder for colour overlays with a legend (<stem>.jpg).
        scene_head: folder of a scene head (segmentation.scene) whose top 3 scenes of each image go to
            <out>/scenes.json; auto: the checkpoint folder's, when it has one; null: none.
        scale: resize factor before the network, aspect kept (1.0: images at the model's ground resolution, such as
            the caption set; the checkpoint's input.drone_scale for drone photos).
        bands: which bands of each image make the picture, numbered from 1 as in GDAL: three (red green blue, e.g.
            4 3 2 for a false-colour view of a 4-band file) or one (grey); empty: the first three (aerialdata.images).
        batch_size: images per forward pass.
        shard: I/N: process only every N-th file starting at I (0-based), to split a large folder across machines.
        workers: DataLoader processes decoding images (0: decode in the main process).
        device: auto, cpu or cuda.
        threads: torch CPU threads; empty: torch's default.
        strict: stop at the first unreadable image (exit 2) instead of reporting and skipping it.
        overwrite: redo masks that already exist in out (default: skip them, so a rerun resumes).
        progress: show progress (a bar on a terminal, one line in a log).
    """
    # ---- options, files and outputs, before the model loads
    if not Path(images).is_dir():
        what = "is a file, not a folder" if Path(images).exists() else "not found"
        raise DatasetNotFoundError(f"images folder {images} {what}; pass --images a folder of JPEG/PNG files")
    problems = band_problems(bands)
    if problems:
        raise ConfigError(problems)
    check_writable(out, overwrite, "masks folder", folder=True)
    if overlays:
        check_writable(overlays, overwrite, "overlays folder", folder=True)
    files = shard_files(list_images(images), shard)
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise ConfigError(f"{images}: {stems[f.stem].name} and {f.name} would both write {f.stem}.png; rename one")
        stems[f.stem] = f
    out = Path(out)
    head = find_scene_head(checkpoint, scene_head)  # a head that does not fit the checkpoint stops here
    scenes_path = out / "scenes.json"
    scenes = _earlier_scenes(scenes_path, head) if head is not None and not overwrite else {}
    need_mask = {f for f in files if overwrite or not (out / f"{f.stem}.png").exists()}
    if head is not None and not bands:  # the features the head's fit cached for these images: no encoder pass
        from segmentation.scene import cached_scenes  # (segmentation.scene imports this module)

        found = cached_scenes(head, [f.name for f in files if f.stem not in scenes], scale)
        scenes.update((Path(name).stem, top) for name, top in found.items())
    todo = [f for f in files if f in need_mask or (head is not None and f.stem not in scenes)]
    skipped = len(files) - len(need_mask)

    # ---- model
    if threads:
        torch.set_num_threads(threads)
    seg = load_segmenter(checkpoint, device=device, scene_head=None)
    seg.scene_head = head
    notice = provenance_notice(checkpoint, seg.config, files)  # a synthetic-only model on real photos: say so
    if notice:
        print(notice, file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    if overlays:
        Path(overlays).mkdir(parents=True, exist_ok=True)

    # ---- predict, batch by batch; decoding runs ahead in the workers
    loader = DataLoader(ImageFiles(todo, bands), batch_size=batch_size, num_workers=workers, collate_fn=as_list,
                        prefetch_factor=4 if workers > 0 else None,
                        worker_init_fn=WorkerInit() if workers > 0 else None)  # workers end with this process
    failed: list[dict] = []
    written = 0
    bar = Progress(total=len(todo), desc="segment", unit="image", enabled=progress)
    for batch in loader:
        good = []
        for i, image, err in batch:
            if err is not None:
                if strict:
                    raise DataError(f"{err} (--strict: stopped; {written} masks written, rerun skips them)")
                bar.write(f"skipped: {err}")
                failed.append({"file": str(todo[i]), "error": err})
            else:
                good.append((i, image))
        judge = [(i, im) for i, im in good if todo[i].stem not in scenes] if head is not None else []
        if judge:
            found = seg.scenes([im for _, im in judge], scale=scale, batch_size=batch_size)
            scenes.update((todo[i].stem, s) for (i, _), s in zip(judge, found, strict=True))
        good = [(i, im) for i, im in good if todo[i] in need_mask]  # the others only lacked their scenes
        if good:
            masks = seg.predict([im for _, im in good], scale=scale, batch_size=batch_size)
            for (i, image), mask in zip(good, masks, strict=True):
                stem = todo[i].stem
                write_mask(out / f"{stem}.png", mask, seg.table.colors)
                if overlays:
                    _write_overlay(Path(overlays) / f"{stem}.jpg", image, mask, seg)
                written += 1
        bar.update(len(batch))
    bar.close()
    summary = {"images": len(files), "written": written, "skipped_existing": skipped, "failed": failed,
               "out": str(out), "shard": shard or "0/1"}
    if head is not None:
        on_disk = _earlier_scenes(scenes_path, head)  # another shard's, written meanwhile, are kept
        write_json(scenes_path, {"schema": SCENES_SCHEMA, "classes": head.classes,
                                 "head": {"folder": str(head.folder), "digest": head.digest},
                                 "images": dict(sorted({**on_disk, **scenes}.items()))})
        summary["scenes"] = str(scenes_path)
    elif scenes_path.exists():
        scenes_path.unlink()  # an earlier run's, of a head this run does not use: compositions must not read it
    if failed:
        write_json(out / "failed.json", failed)
    elif (out / "failed.json").exists():
        (out / "failed.json").unlink()  # from an earlier run; nothing failed this time
    if files and len(failed) == len(files):  # every image failed: nothing done is an error (exit 2), not a success
        where = f"{images} (shard {shard})" if shard else f"{images}"
        raise DataError(f"all {len(failed)} images in {where} are unreadable (listed in {out / 'failed.json'}), e.g. "
                        f"{failed[0]['error']}; no mask written. Pass --images a folder of JPEG, PNG or TIFF images")
    print(f"{written} masks written to {out}, {skipped} already there, {len(failed)} unreadable"
          + (f" (listed in {out / 'failed.json'})" if failed else ""), file=sys.stderr)
    return summary


def _earlier_scenes(path: Path, head) -> dict[str, list[dict]]:
    """The scenes an earlier run wrote to ``path`` with the same head (same weights), else {}."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    same = isinstance(doc, dict) and (doc.get("head") or {}).get("digest") == head.digest
    return dict(doc.get("images") or {}) if same else {}


def _write_overlay(path: Path, image: np.ndarray, mask: np.ndarray, seg) -> None:


    canvas = overlay_with_legend(image, mask, seg.table.names, seg.table.colors)
    with atomic_path(path) as tmp:
        Image.fromarray(canvas).save(tmp, format="JPEG", quality=90)


if __name__ == "__main__":
    run(main)
