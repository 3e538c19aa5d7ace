"""Caption the images of one split with an end-to-end captioner; write COCO results JSON for ``evaluation.score``.

    python -m captioners.generate --model runs/captioners/cnn-lstm \\
        --captions data/synthetic/rsicd/dataset_rsicd.json --split test --out runs/captioners/cnn-lstm/preds_test.json
    python -m captioners.generate --model runs/captioners/cnn-lstm ... --num-beams 3 --out .../preds_test_beam3.json
    python -m evaluation.score --predictions runs/captioners/cnn-lstm/preds_test.json \\
        --references data/synthetic/rsicd/dataset_rsicd.json --split test --out runs/captioners/cnn-lstm/scores

``--model`` is a folder written by ``captioners.train``, or a BLIP / VisionEncoderDecoder checkpoint as it is
(zero-shot), as a folder or a hub id (Hugging Face cache first; offline and not cached: one message saying what to
download). Writes ``[{"image_id": "<filename>", "caption": "..."}]`` atomically; nothing is written when an input is
wrong (exit code 2, one message): a missing or unreadable image of the split (every image needs a caption to be
scored), a model whose word vocabulary holds no word. A captioner never writes an empty caption: when the model
leaves any image without a word, nothing is written and the run exits 2 naming how many and which (scoring refuses
empty captions; such a model learnt nothing to say: retrain it).

Library::

    from captioners.generate import main as generate
    generate(model=Path("runs/captioners/cnn-lstm"), captions=Path("data/synthetic/rsicd"), out=Path("p.json"))
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import torch

from aerialdata.captionset import is_blank
from aerialdata.images import read_rgb
from captioners.base import CONFIG_FILE, Device, read_config, resolve_device
from captioners.data import (
    empty_split_problem,
    missing_images_problem,
    open_caption_set,
    split_items,
    unreadable_images_problem,
)
from captioners.model import load_captioner, model_arch
from captioners.registry import ARCHS, Arch
from captioners.text import SPECIALS, VOCAB_FILE, Vocabulary
from segcap.atomic import check_writable, write_json
from segcap.cli import run
from segcap.errors import ConfigError, DataError, SegcapError
from segcap.options import PositiveInt, checked
from segcap.progress import Progress, quiet_library_bars


@checked
def main(
    model: Path,
    captions: Path,
    out: Path,
    split: Literal["test", "val", "train", "restval"] = "test",
    num_beams: PositiveInt = 1,
    images: Path | None = None,
    arch: Arch | None = None,
    batch_size: PositiveInt = 32,
    max_length: PositiveInt | None = None,
    device: Device = "auto",
    threads: PositiveInt | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Caption the images of one caption-set split with an end-to-end captioner; write COCO results JSON.

    Args:
        model: folder written by captioners.train, or a BLIP / VisionEncoderDecoder checkpoint (folder or hub id)
            used zero-shot.
        captions: caption set, Karpathy-split JSON (dataset_rsicd.json...) or its folder, naming the split's images.
        out: predictions file to write ([{"image_id": filename, "caption": ...}]).
        split: caption-set split to caption.
        num_beams: 1 = greedy; more = beam search of that width.
        images: folder of the images, relative to the JSON's folder or absolute (default: as captioners.train finds
            it).
        arch: the architecture the model must have (cnn-lstm, vit-gpt2, blip); another is refused. Default: any.
        batch_size: images per forward pass.
        max_length: longest caption in words (cnn-lstm) or tokens (default: the model's).
        device: auto (CUDA when there is one), cpu or cuda.
        threads: torch CPU threads; empty: torch's default.
        progress: show progress (a bar on a terminal, one line in a log).
        overwrite: replace an existing predictions file.
    """
    # 1. every problem at once, before loading anything or writing anything
    problems = []
    try:
        found = model_arch(model)
        if arch is not None and found != arch:
            problems.append(f"model {model} holds a {found} captioner, not {arch}; pass a {arch} model, or --arch "
                            f"{found} (or no --arch)")
        problems += _vocabulary_problems(Path(model))
    except SegcapError as e:
        problems.append(str(e))
    items = []
    ds = None
    if not Path(captions).exists():
        problems.append(f"captions {captions} not found; pass a Karpathy-split JSON (dataset_rsicd.json) or its folder")
    else:
        try:
            ds = open_caption_set(captions, images)
        except SegcapError as e:
            problems.append(str(e))
    if ds is not None:
        items = split_items(ds, split)
        if not items:
            problems.append(empty_split_problem(ds, split, "split"))
        problems += [p for p in (missing_images_problem(ds, {split: items}), unreadable_images_problem(ds, {split: items}))
                     if p]
    try:
        dev = resolve_device(device)
    except ConfigError as e:
        problems.extend(e.problems)
    if Path(out).is_dir():
        problems.append(f"out {out} is a folder; pass the predictions file to write (e.g. {Path(out) / 'preds.json'})")
    else:
        try:  # a file on the way, a read-only or full disk, a pseudo file system, an existing file
            check_writable(out, overwrite, "predictions file")
        except SegcapError as e:
            problems.append(str(e))
    if problems:
        raise ConfigError(problems)
    if threads:
        torch.set_num_threads(threads)

    # 2. the captioner, then the images a batch at a time
    quiet_library_bars()  # in a log, no bar for loading weights
    cap = load_captioner(model, device=str(dev), arch=arch)
    names = [it.filename for it in items]
    captions_out: list[str] = []
    t0 = time.perf_counter()
    with Progress(total=len(names), desc=f"captioning {split} ({cap.arch}, beams={num_beams})", unit="image",
                  enabled=progress) as bar:
        for i in range(0, len(names), batch_size):
            batch = [read_rgb(ds.image_path(n)) for n in names[i: i + batch_size]]  # type: ignore[union-attr]
            captions_out.extend(cap.caption(batch, num_beams=num_beams, batch_size=batch_size, max_length=max_length))
            bar.update(len(batch))
    dt = time.perf_counter() - t0
    _check_not_blank(model, names, captions_out, out)

    # 3. the predictions, atomically
    write_json(out, [{"image_id": n, "caption": c} for n, c in zip(names, captions_out, strict=True)])
    print(f"wrote {out}: {len(names)} captions in {dt:.1f} s ({len(names) / max(dt, 1e-9):.1f} captions/s, "
          f"{cap.arch}, beams={num_beams})", flush=True)
    return Path(out)


def _vocabulary_problems(model: Path) -> list[str]:
    """A model folder whose word vocabulary (vocab.json: cnn-lstm) holds no word can write nothing but empty
    captions (it was trained on blank captions, or with a min_count above every word's count)."""
    if not (model / CONFIG_FILE).is_file() or not (model / VOCAB_FILE).is_file():
        return []
    read_config(model)
    if len(Vocabulary.load(model / VOCAB_FILE)) > len(SPECIALS):
        return []
    return [f"model {model}: its vocabulary ({VOCAB_FILE}) holds no word, only {', '.join(SPECIALS)}: every caption "
            "it writes would be empty (it was trained on blank captions, or with a min_count above every word's "
            "count); train it again with captioners.train, which refuses such caption sets"]


def _check_not_blank(model: Path, names: list[str], captions: list[str], out: Path) -> None:
    """A DataError (nothing written) when the model left any image without a word: scoring refuses empty captions,
    and a captioner that writes one has learnt nothing to say for that image."""
    blank = [n for n, c in zip(names, captions, strict=True) if is_blank(c)]
    if not blank:
        return
    shown = ", ".join(blank[:5]) + (f" and {len(blank) - 5} more" if len(blank) > 5 else "")
    every = "every one" if len(blank) == len(names) else f"{len(blank)}"
    raise DataError(f"model {model} wrote an empty caption for {every} of the {len(names)} images ({shown}); "
                    f"nothing written to {out}. Such a model has learnt nothing to say for them: train it longer "
                    "or on a caption set with real captions (check its sentences[].raw)")


__all__ = ["main", "ARCHS"]

if __name__ == "__main__":
    run(main)
