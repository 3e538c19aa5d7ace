"""Caption images from their composition records with a model trained by :mod:`llm.finetune`.

Greedy (default) or beam search, batched with left padding, stopping at EOS; writes COCO results JSON
``[{"image_id": "<filename>", "caption": "..."}]`` atomically::

    python -m llm.generate --model runs/llm/tiny --compositions runs/gt/compositions.jsonl \\
        --captions data/synthetic/rsicd/dataset_rsicd.json --split test --out runs/llm/tiny/preds_test.json
    python -m llm.generate --model runs/llm/tiny ... --num-beams 3 --out runs/llm/tiny/preds_test_beam3.json

Without ``--captions`` every record is captioned and ``image_id`` is the record's ``image``.

Library::

    from llm.generate import Captioner
    captioner = Captioner("runs/llm/tiny")
    captioner.caption(records)            # list of composition records -> list of captions
    captioner.caption(records, num_beams=3)
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch

from aerialdata.captionset import CaptionDataset
from composition.schema import read_jsonl
from composition.text import to_prompt
from llm.examples import PromptTemplate, join_records
from llm.model import load_trained
from llm.tokenizer import prompt_ids
from segcap.atomic import check_writable, write_json
from segcap.cli import run
from segcap.errors import ConfigError
from segcap.progress import Progress, quiet_library_bars


class Captioner:
    """A trained caption LM with its prompt template (read from the model folder, so it matches training).

    Args:
        model_dir: the ``--out`` folder of :mod:`llm.finetune`.
        batch_size: prompts per generate call.
        max_new_tokens: longest caption in tokens.
        quantize: load the base quantized this way (``none``, ``nf4``, ``int8``); None = as trained.
        precision: ``auto`` (bf16 on CUDA, fp32 on CPU), ``fp32``, ``bf16`` or ``fp16``.
    """

    def __init__(
        self,
        model_dir: str | Path,
        batch_size: int = 64,
        max_new_tokens: int = 40,
        quantize: str | None = None,
        precision: str = "auto",
    ):
        self.model_dir = Path(model_dir)
        quiet_library_bars()  # in a log, no "Loading weights" bar
        self.model, self.tokenizer, self.meta = load_trained(self.model_dir, quantize, precision)
        self.template = PromptTemplate(**self.meta["prompt"])
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.max_length = int(self.meta.get("max_length", 512))
        self.device = next(self.model.parameters()).device

    def prompt(self, record: dict) -> str:
        """The prompt text of one composition record (the training template and mode)."""

        return self.template.render_text(to_prompt(record))

    @torch.inference_mode()
    def caption(
        self,
        records: Sequence[dict],
        num_beams: int = 1,
        batch_size: int | None = None,
        max_new_tokens: int | None = None,
        progress: bool = False,
    ) -> list[str]:
        """One caption per record, in order (greedy for ``num_beams=1``, else beam search)."""
        if num_beams < 1:
            raise ConfigError(f"num_beams must be >= 1 (got {num_beams})")
        bs = batch_size or self.batch_size
        new = max_new_tokens or self.max_new_tokens
        tok = self.tokenizer
        keep = max(2, self.max_length - new)  # prompt tokens that fit with the caption
        ids = []
        for rec in records:
            p = prompt_ids(tok, self.prompt(rec))
            if len(p) > keep:  # as in training: drop the prompt's start, keep BOS
                p = p[:1] + p[len(p) - keep + 1 :] if tok.bos_token_id is not None else p[-keep:]
            ids.append(p)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths share a batch
        out: list[str] = [""] * len(ids)
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]

        for batch in Progress(batches, desc=f"captioning (beams={num_beams})", unit="batch", enabled=progress):
            n = max(len(ids[i]) for i in batch)
            x = torch.full((len(batch), n), tok.pad_token_id, dtype=torch.long)  # (B, T), padded on the left
            mask = torch.zeros((len(batch), n), dtype=torch.long)  # (B, T)
            for r, i in enumerate(batch):
                x[r, n - len(ids[i]) :] = torch.tensor(ids[i])
                mask[r, n - len(ids[i]) :] = 1
            gen = self.model.generate(
                input_ids=x.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=new,
                num_beams=num_beams,
                do_sample=False,
                early_stopping=num_beams > 1,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )  # (B, T + new)
            for r, i in enumerate(batch):
                text = tok.decode(gen[r, n:], skip_special_tokens=True)
                out[i] = clean_caption(text)
        return out


def clean_caption(text: str) -> str:
    """The caption part of generated text: first line, single spaces."""
    text = text.strip().split("\n", 1)[0]
    return " ".join(text.split())


def main(
    model: Path,
    compositions: Path,
    out: Path,
    captions: Path | None = None,
    split: Literal["test", "val", "train", "restval"] = "test",
    num_beams: int = 1,
    batch_size: int = 64,
    max_new_tokens: int = 40,
    allow_missing: bool = False,
    num_threads: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Caption the images of one split from their compositions; write COCO results JSON.

    Args:
        model: model folder written by llm.finetune.
        compositions: composition records (JSON Lines, segcap.composition/1).
        out: predictions file to write ([{"image_id": filename, "caption": ...}]).
        captions: caption set (dataset_rsicd.json or its folder) naming the images of each split; without it every
            record is captioned.
        split: caption-set split to caption (with --captions).
        num_beams: 1 = greedy; more = beam search with that many beams.
        batch_size: prompts per generate call.
        max_new_tokens: longest caption in tokens.
        allow_missing: skip split images without a composition instead of stopping.
        num_threads: torch CPU threads (0 = torch's default).
        progress: show progress (a bar on a terminal, one line in a log).
        overwrite: replace an existing predictions file.
    """
    problems = []
    if num_beams < 1:
        problems.append(f"--num-beams must be >= 1 (got {num_beams})")
    if batch_size < 1:
        problems.append(f"--batch-size must be >= 1 (got {batch_size})")
    if max_new_tokens < 1:
        problems.append(f"--max-new-tokens must be >= 1 (got {max_new_tokens})")
    for what, p in (("model folder", model), ("compositions", compositions), ("captions", captions)):
        if p is not None and not Path(p).exists():
            problems.append(f"{what} not found: {p}")
    if problems:
        raise ConfigError(problems)
    check_writable(out, overwrite, "predictions file")
    if num_threads > 0:
        torch.set_num_threads(num_threads)


    records = read_jsonl(compositions)
    if captions is not None:
        capset = CaptionDataset(captions)
        pairs = join_records(records, capset, [split], compositions, allow_missing)
        chosen, names = [rec for rec, _ in pairs], [it.filename for _, it in pairs]
    else:
        chosen, names = list(records), [rec["image"] for rec in records]

    captioner = Captioner(model, batch_size=batch_size, max_new_tokens=max_new_tokens)
    t0 = time.perf_counter()
    caps = captioner.caption(chosen, num_beams=num_beams, progress=progress)
    dt = time.perf_counter() - t0
    write_json(out, [{"image_id": n, "caption": c} for n, c in zip(names, caps, strict=True)])
    print(f"wrote {out}: {len(caps)} captions in {dt:.1f} s ({len(caps) / max(dt, 1e-9):.1f} captions/s, "
          f"beams={num_beams})", flush=True)
    return Path(out)


if __name__ == "__main__":
    run(main)
