"""What a segmentation checkpoint was trained on, and the one-line notice the tools print about it.

A checkpoint's ``config.yaml`` records its training data (written by ``segmentation.train``)::

    trained_on:
      - {source: drone, root: data/synthetic/drone, gsd: 0.25, synthetic: true, images: 300}
      - {source: loveda, root: /data/LoveDA, gsd: 0.3, synthetic: false, images: 2522}

A model that has only seen synthetic scenes gets real photos wrong (the seed's "artificial surface ~95%" on every
RSICD tile), so ``segmentation.predict`` and ``pipeline.caption`` print :func:`provenance_notice` once per run, on
stderr, before the work::

    from segmentation.provenance import provenance_notice
    note = provenance_notice("runs/demo/segmentation", seg.config)   # None for a checkpoint trained on real data
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from aerialdata.sources import SYNTHETIC_MARKER

Provenance = Literal["synthetic", "real", "unknown"]
ADVICE = "train on a labelled real source (README, Real data)"


def training_data(config: dict) -> Provenance:
    """``synthetic`` when every ``trained_on`` entry says ``synthetic: true``; ``real`` when at least one says
    ``synthetic: false`` (a mix included); ``unknown`` when the config has no usable ``trained_on`` (older
    checkpoints, or entries that do not say)."""
    entries = config.get("trained_on") if isinstance(config, dict) else None
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        return "unknown"
    flags = [e.get("synthetic") for e in entries]
    if any(f is False for f in flags):
        return "real"
    if all(f is True for f in flags):
        return "synthetic"
    return "unknown"


def from_synthetic_set(images: Iterable[str | Path]) -> bool:
    """Whether every image lies in a set written by synthetic.generate: its folder, or the folder above it (the
    set's root above ``RSICD_images/``), holds the synthetic marker. An empty list is not."""
    folders = {Path(p).resolve().parent for p in images}
    return bool(folders) and all(any((f / SYNTHETIC_MARKER).is_file() for f in (d, d.parent)) for d in folders)


def provenance_notice(checkpoint: str | Path, config: dict, images: Iterable[str | Path] = ()) -> str | None:
    """The line to print before segmenting with this checkpoint, or None when it was trained on real data, or when
    the images themselves are synthetic scenes (the demo segmenting its own caption set needs no warning).

    Args:
        checkpoint: the checkpoint folder, as the user named it (the notice quotes it).
        config: its ``config.yaml`` as a dict (``Segmenter.config``).
        images: the image files about to be segmented.
    """
    kind = training_data(config)
    if kind == "real" or from_synthetic_set(images):
        return None
    if kind == "synthetic":
        roots = ", ".join(str(e.get("root") or e.get("source") or "?") for e in config["trained_on"])
        return (f"note: {checkpoint} was trained on synthetic scenes only ({roots}); on real photos its classes "
                f"will be wrong: {ADVICE}")
    return (f"note: {checkpoint} does not say what it was trained on (no trained_on in its config.yaml: an older "
            f"checkpoint); if it saw synthetic scenes only, its classes on real photos will be wrong: {ADVICE}")
