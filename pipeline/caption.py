"""Caption images with a trained segmenter and caption LM: one image in, one caption out.

    python -m pipeline.caption data/synthetic/rsicd/RSICD_images/pond_3.jpg \\
        --segmentation runs/demo/segmentation --llm runs/demo/llm/pipeline
    python -m pipeline.caption a.jpg b.tif --segmentation DIR --llm DIR --explain      # + the composition table
    python -m pipeline.caption a.jpg --segmentation DIR --llm DIR --overlay a_overlay.png  # mask, circles, labels
    python -m pipeline.caption *.jpg --segmentation DIR --llm DIR --overlay overlays/ --json captions.json

Any size or mode of image is accepted (RGB, RGBA, grey, palette, 16-bit TIFF: see
``aerialdata.images.read_rgb``); an unreadable file is reported and skipped (``--strict``: stop, exit 2).
When the segmenter was trained on synthetic scenes only, one note on stderr says so before the work: its classes on
real photos will be wrong (:mod:`segmentation.provenance`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from aerialdata.images import read_rgb
from composition.extract import extract
from composition.show import draw_overlay, table_text
from llm.generate import Captioner
from segcap import atomic
from segcap.cli import run
from segcap.errors import ConfigError, DataError
from segmentation.model import load_segmenter
from segmentation.provenance import provenance_notice


def main(
    images: list[Path],
    segmentation: Path,
    llm: Path,
    explain: bool = False,
    overlay: Path | None = None,
    json: Path | None = None,
    scale: float = 1.0,
    num_beams: int = 1,
    strict: bool = False,
    overwrite: bool = False,
) -> list[dict]:
    """Segment each image, describe its composition, and write its caption.

    Args:
        images: image files (jpg, png, tif, ...), any size or mode.
        segmentation: segmentation checkpoint folder (segmentation.train --out).
        llm: caption model folder (llm.finetune --out).
        explain: also print the composition table and the prompt text the LLM read.
        overlay: PNG of the mask, each class's circle and centre and labels; a folder when several images are given.
        json: write the results (image, caption, composition) to this JSON file.
        scale: resize factor before segmenting (ground resolution; 1.0 = the caption set's resolution).
        num_beams: 1 for greedy decoding, more for beam search.
        strict: stop at the first unreadable image instead of skipping it.
        overwrite: replace existing overlay or JSON files.
    """

    # 1. check everything before the slow loading
    missing = [p for p in images if not Path(p).is_file()]
    problems = []
    if missing and (strict or len(missing) == len(images)):
        problems += [f"image not found: {p}" for p in missing]
    for p in missing if not problems else []:
        print(f"skipped: image not found: {p}", file=sys.stderr)
    images = [p for p in images if Path(p).is_file()]
    if not (Path(segmentation) / "model.pt").is_file():
        problems.append(f"--segmentation {segmentation}: no model.pt there; give a segmentation.train output folder")
    if not Path(llm).is_dir():
        problems.append(f"--llm {llm}: not a folder; give an llm.finetune output folder")
    if scale <= 0:
        problems.append(f"--scale must be positive, got {scale}")
    if problems:
        raise ConfigError(problems)
    overlay_dir = overlay is not None and (len(images) > 1 or Path(overlay).suffix == "")
    if json is not None:
        atomic.check_writable(json, overwrite)
    if overlay is not None and not overlay_dir:
        atomic.check_writable(overlay, overwrite)

    # 2. models
    seg = load_segmenter(segmentation)
    notice = provenance_notice(segmentation, seg.config, images)  # a synthetic-only model on real photos: say so
    if notice:
        print(notice, file=sys.stderr, flush=True)
    captioner = Captioner(llm)

    # 3. images -> masks -> compositions -> captions
    results, records, pixels = [], [], []
    for path in images:
        try:
            rgb = read_rgb(path)
        except DataError as e:
            if strict:
                raise
            print(f"skipped: {e}", file=sys.stderr)
            continue
        mask = seg.predict([rgb], scale=scale)[0]
        records.append(extract(mask, seg.table, image=Path(path).name))
        pixels.append((path, rgb, mask))
    captions = captioner.caption(records, num_beams=num_beams) if records else []

    for (path, rgb, mask), rec, cap in zip(pixels, records, captions, strict=True):
        print(f"{path}: {cap}")
        if explain:
            print(table_text(rec) + "\n")
        if overlay is not None:
            target = Path(overlay) / f"{Path(path).stem}.png" if overlay_dir else Path(overlay)
            if overlay_dir:
                atomic.check_writable(target, overwrite)
            draw_overlay(rec, rgb, target, seg.table, mask=mask)
        results.append({"image": str(path), "caption": cap, "composition": rec})
    if json is not None:
        atomic.write_json(json, results)
    return results


if __name__ == "__main__":

    run(main, positional=("images",))
