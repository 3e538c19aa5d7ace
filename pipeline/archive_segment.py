"""The segment stage of :mod:`pipeline.archive`: a Ray actor that loads the segmenter once.

Each tile is segmented on its own at scale 1, as :mod:`pipeline.caption` segments one image, so the same tile gets the
same mask. The caption actor is :mod:`pipeline.archive_caption` (a module of its own: this actor's process then
never imports transformers); rows and their schemas: :mod:`pipeline.archive_stages`.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from pipeline.archive_stages import SEGMENT_FIELDS, UNLABELED, table, valid_mask
from segcap.options import PositiveInt, checked
from segmentation.model import load_segmenter


class SegmentTiles:
    """Segment a batch of tiles, each on its own as pipeline.caption segments an image (scale 1); the scene head's
    top scenes too when the checkpoint has one. A Ray actor: the model loads once."""

    @checked
    def __init__(self, segmentation: str, scene_head: str | None = "auto", device: str = "cpu",
                 threads: PositiveInt = 1):
        torch.set_num_threads(threads)
        self.seg = load_segmenter(segmentation, device=device, scene_head=scene_head)

    def __call__(self, batch):
        out = []
        for row in batch.to_pylist():
            if row["status"] == "ok":
                rgb = np.frombuffer(row["pixels"], np.uint8).reshape(row["px_h"], row["px_w"], 3)
                mask = self.seg.predict([rgb])[0]
                valid = valid_mask(row)
                if valid is not None:
                    mask = mask.copy()
                    mask[~valid] = UNLABELED
                scenes = self.seg.scenes([rgb])
                row = {**row, "mask": np.ascontiguousarray(mask, np.uint8).tobytes(),
                       "scenes": json.dumps(scenes[0]) if scenes else None}
            out.append(row)
        return table(out, SEGMENT_FIELDS)
