"""Caption images with a trained segmenter and caption LM: one image in, one caption out.

    python -m pipeline.caption data/synthetic/rsicd/RSICD_images/pond_3.jpg \\
        --segmentation runs/demo/segmentation --llm runs/demo/llm/pipeline
    python -m pipeline.caption a.jpg b.tif --segmentation DIR --llm DIR --explain      # + the composition table
    python -m pipeline.caption a.jpg --segmentation DIR --llm runs/demo/llm/pipeline_rag --explain --consensus 5
        # + the training images whose captions the retrieval prompt showed; the consensus of 5 beam candidates
    python -m pipeline.caption a.jpg --segmentation DIR --llm runs/demo/llm/pipeline --explain --consensus 5 \
        --consensus-pool 5     # the 5 closest training images' captions vote too; --explain lists them
    python -m pipeline.caption a.jpg --segmentation DIR --llm DIR --overlay a_overlay.png  # mask, circles, labels
    python -m pipeline.caption *.jpg --segmentation DIR --llm DIR --overlay overlays/ --json captions.json
    python -m pipeline.caption a.jpg --segmentation DIR --scene-head runs/demo/scenes --llm DIR   # + top scenes

A scene head (``python -m segmentation.scene``) in the segmentation folder, or the folder ``--scene-head`` names,
puts each image's top scenes into its composition record (``"scenes"``), as segmentation.predict puts them into
scenes.json for a whole caption set.

Any size or mode of image is accepted (RGB, RGBA, grey, palette, 16-bit and 12-bit data, multi-band TIFF: see
``aerialdata.images``, which says how values are scaled to 8 bits and which bands are read); ``--bands`` chooses the
bands of a multi-band file, numbered from 1 as in GDAL::

    python -m pipeline.caption bgr.tif --segmentation DIR --llm DIR --bands 3 2 1    # bands stored blue, green, red
    python -m pipeline.caption scene.tif --segmentation DIR --llm DIR --bands 4 3 2  # false colour: band 4 as red
    python -m pipeline.caption sar.tif --segmentation DIR --llm DIR --bands 1        # band 1 of 2, as grey

An unreadable file is reported and skipped (``--strict``: stop, exit 2); when every image given fails, the command
exits 2 with one line saying how many. An image smaller than :data:`MIN_SIDE` px a side (after ``--scale``) is
captioned with a note on stderr: the segmenter pads it to 32 px and sees mostly padding, so its caption is a guess.
When the segmenter was trained on synthetic scenes only, one note on stderr says so before the work: its classes on
real photos will be wrong (:mod:`segmentation.provenance`).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from aerialdata.images import band_problems, read_rgb, scaled_size
from composition.extract import extract
from composition.show import draw_overlay, table_text
from llm.generate import Captioner, consensus_problems, index_images
from llm.retrieval import INDEX_FILE
from segcap import atomic
from segcap.cli import run
from segcap.errors import ConfigError, DataError
from segcap.options import NonNegativeInt, PositiveFloat, PositiveInt, checked
from segmentation.model import PAD_MULTIPLE, load_segmenter
from segmentation.provenance import provenance_notice

LARGE_PIXELS = 24_000_000  # beyond this (after --scale), say that segmenting takes minutes and what --scale does
MIN_SIDE = PAD_MULTIPLE  # below this many px a side (after --scale), the segmenter sees mostly its zero padding


@checked
def main(
    images: list[Path],
    segmentation: Path,
    llm: Path,
    explain: bool = False,
    overlay: Path | None = None,
    json: Path | None = None,
    scale: PositiveFloat = 1.0,
    scene_head: str | None = "auto",
    num_beams: PositiveInt = 1,
    consensus: int = 0,
    consensus_pool: NonNegativeInt = 0,
    bands: list[int] | None = None,
    strict: bool = False,
    overwrite: bool = False,
) -> list[dict]:
    """Segment each image, describe its composition, and write its caption.

    Args:
        images: image files (jpg, png, tif, ...), any size or mode.
        segmentation: segmentation checkpoint folder (segmentation.train --out).
        llm: caption model folder (llm.finetune --out).
        explain: also print the composition table, and the training images whose captions the prompt showed (a model
            trained with retrieval prompts).
        overlay: PNG of the mask, each class's circle and centre and labels; a folder when several images are given.
        json: write the results (image, caption, composition) to this JSON file.
        scale: resize factor before segmenting (ground resolution; 1.0 = the caption set's resolution).
        scene_head: folder of a scene head (segmentation.scene) whose top scenes go into each record; auto: the
            segmentation folder's, when it has one; null: none.
        num_beams: 1 for greedy decoding, more for beam search.
        consensus: N >= 2: the consensus of N beam candidates (the one with the highest CIDEr-D against the others,
            each weighted by the model's probability of it).
        consensus_pool: K > 0: every caption of the K training images with the closest compositions votes too
            (weighted the same way); needs --consensus. --explain lists those images.
        bands: which bands of each image make the picture, numbered from 1 as in GDAL: three (red green blue, e.g.
            4 3 2) or one (grey); null: the first three, or the one band of a grey image (aerialdata.images).
        strict: stop at the first unreadable image instead of skipping it; without it, a run in which every image
            fails exits 2 all the same.
        overwrite: replace existing overlay or JSON files.
    """

    # 1. check everything before the slow loading
    missing = {p: (f"{p} is a folder, not an image file; give the images inside it (e.g. {Path(p) / '*.jpg'})"
                   if Path(p).is_dir() else f"image not found: {p}") for p in images if not Path(p).is_file()}
    problems = []
    if missing and (strict or len(missing) == len(images)):
        problems += list(missing.values())
    for why in missing.values() if not problems else []:
        print(f"skipped: {why}", file=sys.stderr)
    given = len(images)
    images = [p for p in images if Path(p).is_file()]
    if not (Path(segmentation) / "model.pt").is_file():
        problems.append(f"--segmentation {segmentation}: no model.pt there; give a segmentation.train output folder")
    if not Path(llm).is_dir():
        problems.append(f"--llm {llm}: not a folder; give an llm.finetune output folder")
    problems += consensus_problems(consensus, consensus_pool,
                                   index_images(llm) if consensus_pool > 0 and Path(llm).is_dir() else None,
                                   str(Path(llm) / INDEX_FILE))
    problems += band_problems(bands)
    if problems:
        raise ConfigError(problems)
    overlay_dir = overlay is not None and (len(images) > 1 or Path(overlay).suffix == "" or Path(overlay).is_dir())
    if json is not None:
        atomic.check_writable(json, overwrite, "--json file")
    if overlay is not None:
        atomic.check_writable(overlay, overwrite, "--overlay folder" if overlay_dir else "--overlay file",
                              folder=overlay_dir)
        for p in images if overlay_dir else []:
            atomic.check_writable(Path(overlay) / f"{Path(p).stem}.png", overwrite, "overlay")

    # 2. models
    seg = load_segmenter(segmentation, scene_head=scene_head)
    notice = provenance_notice(segmentation, seg.config, images)  # a synthetic-only model on real photos: say so
    if notice:
        print(notice, file=sys.stderr, flush=True)
    captioner = Captioner(llm)
    if consensus_pool:
        captioner.require_index("--consensus-pool")

    # 3. images -> masks -> compositions -> captions
    results, records, pixels = [], [], []
    for path in images:
        try:
            rgb = read_rgb(path, bands=bands)
        except DataError as e:
            if strict:
                raise
            print(f"skipped: {e}", file=sys.stderr)
            continue
        for note in (_large_note(path, rgb.shape[1], rgb.shape[0], scale, seg.tile),
                     _small_note(path, rgb.shape[1], rgb.shape[0], scale)):
            if note:
                print(note, file=sys.stderr, flush=True)
        mask = seg.predict([rgb], scale=scale)[0]
        scenes = seg.scenes([rgb], scale=scale)  # None without a scene head
        records.append(extract(mask, seg.table, image=Path(path).name, scenes=scenes[0] if scenes else None))
        pixels.append((path, rgb, mask))
    if not records:  # every image given was missing or unreadable: each is named above
        raise DataError(f"all {given} image{'s' if given != 1 else ''} given failed (each named above as skipped), "
                        "so nothing was captioned; give readable image files (JPEG, PNG, TIFF)")
    captions = captioner.caption(records, num_beams=num_beams, consensus=consensus,
                                 pool=consensus_pool)
    near = captioner.neighbours(records)
    voters = captioner.neighbours(records, consensus_pool) if consensus_pool else [[] for _ in records]

    def _json(nbs: list) -> list[dict]:
        return [{"image": nb.image, "distance": round(nb.distance, 4), "captions": nb.captions} for nb in nbs]

    for (path, rgb, mask), rec, cap, nbs, votes in zip(pixels, records, captions, near, voters, strict=True):
        print(f"{path}: {cap}")
        if explain:
            print(table_text(rec))
            for nb in nbs:  # the neighbours the prompt showed (retrieval models)
                print(f"  neighbour {nb.image} (distance {nb.distance:.2f}): {' | '.join(nb.captions)}")
            for nb in votes:  # the training images whose captions voted (--consensus-pool)
                print(f"  voter {nb.image} (distance {nb.distance:.2f}): {' | '.join(nb.captions)}")
            print()
        if overlay is not None:
            target = Path(overlay) / f"{Path(path).stem}.png" if overlay_dir else Path(overlay)
            draw_overlay(rec, rgb, target, seg.table, mask=mask)
        results.append({"image": str(path), "caption": cap, "composition": rec,
                        **({"neighbours": _json(nbs)} if nbs else {}), **({"voters": _json(votes)} if votes else {})})
    if json is not None:
        atomic.write_json(json, results)
    return results


def _large_note(path: Path, width: int, height: int, scale: float, tile: int) -> str | None:
    """A note for an image that will take minutes: segmented in tiles of ``tile`` px (memory stays bounded), and
    what --scale does about the time."""
    pixels = width * height * scale * scale
    if pixels <= LARGE_PIXELS:
        return None
    step = tile - tile // 8
    tiles = max(1, math.ceil((width * scale - tile // 8) / step)) * max(1, math.ceil((height * scale - tile // 8) / step))
    return (f"note: {path} is {width}x{height} ({width * height / 1e6:.0f} MP); at --scale {scale:g} it is segmented "
            f"in {tiles} tiles of {tile} px, which takes minutes on a CPU. If its ground resolution is finer than "
            "the caption set's (a drone photo), pass --scale <its metres per pixel / the caption set's> (the "
            "checkpoint's input.drone_scale for drone-set photos, e.g. 0.25): 1/16 of the time at 0.25")


def _small_note(path: Path, width: int, height: int, scale: float) -> str | None:
    """A note for an image too small for the segmenter to say much: under :data:`MIN_SIDE` px a side after --scale."""
    w, h = scaled_size((width, height), scale)
    if min(w, h) >= MIN_SIDE:
        return None
    at = f" ({w}x{h} at --scale {scale:g})" if scale != 1 else ""
    fix = (f"a larger --scale (at --scale 1 it is {width}x{height})" if min(width, height) >= MIN_SIDE
           else "the full image, not a thumbnail or a crop")
    return (f"note: {path} is {width}x{height} px{at}, smaller than {MIN_SIDE} px a side: the segmenter pads it to "
            f"{PAD_MULTIPLE} px and sees mostly padding, so its mask, and the caption, rest on a few pixels: read the "
            f"caption as a guess from its colours, not a description; give {fix}")


if __name__ == "__main__":

    run(main, positional=("images",))
