"""The caption stage of :mod:`pipeline.archive`: a Ray actor that loads the caption LM once and captions each batch
of composition records with ``Captioner.caption``, as :mod:`pipeline.caption` captions its images' records."""

from __future__ import annotations

import json
import os

import torch

from llm.generate import Captioner
from pipeline.archive_stages import CAPTION_FIELDS, table
from segcap.options import NonNegativeInt, PositiveInt, checked


class CaptionTiles:
    """Caption a batch of records with the caption LM, as pipeline.caption does. A Ray actor."""

    @checked
    def __init__(self, llm: str, num_beams: PositiveInt = 1, consensus: int = 0, consensus_pool: NonNegativeInt = 0,
                 batch_size: PositiveInt = 64, device: str = "cpu", threads: PositiveInt = 1):
        if device == "cpu":  # the LM moves itself to any GPU it finds, one this actor was not given
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        torch.set_num_threads(threads)
        self.captioner = Captioner(llm, batch_size=batch_size)
        self.options = {"num_beams": num_beams, "consensus": consensus, "pool": consensus_pool}

    def __call__(self, batch):
        rows = batch.to_pylist()
        ok = [r for r in rows if r["status"] == "ok"]
        captions = self.captioner.caption([json.loads(r["composition"]) for r in ok], **self.options) if ok else []
        for r, c in zip(ok, captions, strict=True):
            r["caption"] = c
        return table(rows, CAPTION_FIELDS)
