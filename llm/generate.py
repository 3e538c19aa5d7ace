"""Caption images from their composition records with a model trained by :mod:`llm.finetune`.

Greedy (default) or beam search, batched with left padding, stopping at EOS; writes COCO results JSON
``[{"image_id": "<filename>", "caption": "..."}]`` atomically::

    python -m llm.generate --model runs/llm/tiny --compositions runs/gt/compositions.jsonl \\
        --captions data/synthetic/rsicd/dataset_rsicd.json --split test --out runs/llm/tiny/preds_test.json
    python -m llm.generate --model runs/llm/tiny ... --num-beams 3 --out runs/llm/tiny/preds_test_beam3.json
    python -m llm.generate --model runs/llm/tiny ... --consensus 5 --out runs/llm/tiny/preds_test_mbr5.json

Consensus decoding (``--consensus N``): N candidates per image (beam search's N best, or ``--candidates sample``: N
samples, seeded), and the one with the highest CIDEr-D against the other candidates is kept (:mod:`llm.consensus`).
Beam candidates are weighted by the model's probability of each (:data:`WEIGHT_SHARPNESS`), samples count alike (they
already come with the model's probabilities). ``--consensus-pool K`` adds every caption of the K training images
whose compositions are closest to the candidates, weighted the same way: the neighbours vote, and the model, reading
this image's composition, says how much each vote counts. The index of the training compositions is saved beside
every model (``retrieval.npz``); a model trained with retrieval prompts (``retrieval_k``) also reads its prompt's
neighbours from it.

Without ``--captions`` every record is captioned and ``image_id`` is the record's ``image``.

Library::

    from llm.generate import Captioner
    captioner = Captioner("runs/llm/tiny")
    captioner.caption(records)            # list of composition records -> list of captions
    captioner.caption(records, num_beams=3)
    captioner.caption(records, consensus=5)            # consensus of 5 beam candidates
    captioner.caption(records, consensus=5, pool=5)    # ... and the captions of the 5 closest training images
    captioner.neighbours(records)                      # the retrieved training images (retrieval models)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from aerialdata.captionset import CaptionDataset
from composition.schema import read_jsonl
from composition.text import to_prompt
from llm.consensus import NGRAM_FILE, CiderD
from llm.examples import PromptTemplate, join_records
from llm.model import load_trained
from llm.retrieval import INDEX_FILE, CompositionIndex, Neighbour
from llm.tokenizer import CaptionCollator, encode_example, prompt_ids
from segcap.atomic import check_writable, write_json
from segcap.cli import run
from segcap.errors import ConfigError
from segcap.options import NonNegativeInt, PositiveInt, checked
from segcap.progress import Progress, quiet_library_bars

# A consensus candidate's weight is exp(WEIGHT_SHARPNESS x its mean token log-probability): the geometric-mean token
# probability, sharpened (length-normalised, so a long caption is not out-voted for its length). Over four demo runs
# (docs/benchmarks.md, 2026-12-01) the pool's mean CIDEr was 2.463 with equal weights, 2.453 with 1, 2.485 with 2,
# 2.462 with 4 and 2.362 with the whole-sequence probability: 2 is level with the others, not better than them.
WEIGHT_SHARPNESS = 2.0

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
        self.index = CompositionIndex.load(self.model_dir / INDEX_FILE) if (self.model_dir / INDEX_FILE).is_file() \
            else None
        if self.template.retrieves and self.index is None:
            raise ConfigError(f"{self.model_dir} was trained with retrieval prompts (retrieval_k "
                              f"{self.template.retrieval_k}) but has no {INDEX_FILE}; train it again")
        self._cider: CiderD | None = None

    def require_index(self, what: str) -> CompositionIndex:
        """The training compositions' index, or a ConfigError naming ``what`` needs it (a folder from before
        llm.finetune saved it with every model)."""
        if self.index is None:
            raise ConfigError(f"{what} needs the training compositions' index ({self.model_dir / INDEX_FILE}), "
                              "which llm.finetune saves with every model since 2026-12-01; train the model again")
        return self.index

    def neighbours(self, records: Sequence[dict], k: int | None = None) -> list[list[Neighbour]]:
        """The training images each record's prompt shows (none without retrieval), or with ``k`` its k closest
        training images (a consensus pool's); never the image itself."""
        what = "retrieval" if k is None else "a consensus pool"
        if k is None:
            if not self.template.retrieves:
                return [[] for _ in records]
            k = self.template.retrieval_k
        return self.require_index(what).neighbours(list(records), k)

    def prompts(self, records: Sequence[dict]) -> list[str]:
        """The prompt texts of composition records (the training template, mode and retrieval)."""
        near = self.neighbours(records)
        return [self.template.render_text(to_prompt(r), [nb.captions for nb in n]) for r, n in zip(records, near, strict=True)]

    def prompt(self, record: dict) -> str:
        """The prompt text of one composition record."""
        return self.prompts([record])[0]

    @property
    def cider(self) -> CiderD:
        """CIDEr-D with the training captions' document frequencies (uniform weights for a folder without them)."""
        if self._cider is None:
            path = self.model_dir / NGRAM_FILE
            self._cider = CiderD(json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None)
        return self._cider

    @checked
    @torch.inference_mode()
    def caption(
        self,
        records: Sequence[dict],
        num_beams: PositiveInt = 1,
        batch_size: PositiveInt | None = None,
        max_new_tokens: PositiveInt | None = None,
        progress: bool = False,
        consensus: int = 0,
        candidates: Literal["beam", "sample"] = "beam",
        seed: int = 0,
        pool: NonNegativeInt = 0,
    ) -> list[str]:
        """One caption per record, in order: greedy for ``num_beams=1``, else beam search; with ``consensus`` N >= 2,
        the consensus of N candidates (:meth:`candidates`), and with ``pool`` K > 0 of those and every caption of the
        K closest training images. Beam candidates and pool captions are weighted by the model's probability
        (:meth:`weights`); with sampled candidates every caption counts alike."""
        if pool and consensus < 2:
            raise ConfigError(f"a consensus pool needs consensus >= 2 candidates (got {consensus})")
        if pool and len(self.require_index("a consensus pool")) < pool:
            raise ConfigError(pool_problem(pool, len(self.index), str(self.model_dir / INDEX_FILE), "pool"))
        prompts = self.prompts(records)  # once: the candidates and their weights read the same prompts
        if consensus < 2:
            sets = self._generate(prompts, 1, "beam", num_beams, batch_size, max_new_tokens, progress, seed)
            return [c[0] for c in sets]
        near = self.neighbours(records, pool) if pool else [[] for _ in records]
        sets = self.candidates(records, consensus, candidates, num_beams, batch_size, max_new_tokens, progress, seed,
                               prompts=prompts)
        sets = [c + [x for nb in n for x in nb.captions] for c, n in zip(sets, near, strict=True)]
        weights = self._weights(prompts, sets, batch_size) if candidates == "beam" else [None] * len(sets)
        chosen = [c[self.cider.choose(c, w)] for c, w in zip(sets, weights, strict=True)]
        return [self.surface(c) for c in chosen] if pool else chosen

    def surface(self, caption: str) -> str:
        """A caption written as this model writes its own: a pool caption from the caption set ("near a road .")
        through the clean-up its tokenizer's decode applies ("near a road."), when it applies one."""
        if getattr(self.tokenizer, "clean_up_tokenization_spaces", False):
            caption = self.tokenizer.clean_up_tokenization(caption)
        return clean_caption(caption)

    @torch.inference_mode()
    def log_likelihoods(self, records: Sequence[dict], captions: Sequence[Sequence[str]],
                        batch_size: int | None = None) -> list[list[tuple[float, int]]]:
        """For each record, the model's log-probability of each of its ``captions`` after the record's prompt (the
        caption's tokens and EOS, teacher-forced), with that token count: ``[[(log_p, tokens), ...], ...]``."""
        return self._log_likelihoods(self.prompts(records), captions, batch_size)

    def _log_likelihoods(self, prompts: Sequence[str], captions: Sequence[Sequence[str]],
                         batch_size: int | None = None) -> list[list[tuple[float, int]]]:
        tok, bs = self.tokenizer, 4 * (batch_size or self.batch_size)
        flat = [encode_example(tok, p, c, self.max_length)
                for p, caps in zip(prompts, captions, strict=True) for c in caps]
        collate, scores = CaptionCollator(tok.pad_token_id), []
        for start in range(0, len(flat), bs):
            b = collate(flat[start : start + bs])
            logits = self.model(input_ids=b["input_ids"].to(self.device),
                                attention_mask=b["attention_mask"].to(self.device)).logits  # (B, T, V)
            labels = b["labels"][:, 1:].to(self.device)  # (B, T-1): token t+1 predicted at t
            logp = torch.log_softmax(logits[:, :-1].float(), -1)
            known = labels != -100
            token_lp = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * known  # (B, T-1)
            scores += list(zip(token_lp.sum(1).tolist(), known.sum(1).tolist(), strict=True))
        out, i = [], 0
        for caps in captions:
            out.append(scores[i : i + len(caps)])
            i += len(caps)
        return out

    def weights(self, records: Sequence[dict], captions: Sequence[Sequence[str]],
                batch_size: int | None = None) -> list[list[float]]:
        """Consensus weights: exp(WEIGHT_SHARPNESS x mean token log-probability) of each caption given its record's
        prompt, relative to the record's most probable caption (so the largest weight is 1)."""
        return self._weights(self.prompts(records), captions, batch_size)

    def _weights(self, prompts: Sequence[str], captions: Sequence[Sequence[str]],
                 batch_size: int | None = None) -> list[list[float]]:
        unique = [list(dict.fromkeys(caps)) for caps in captions]  # a repeated caption is scored once
        out = []
        for caps, kinds, scores in zip(captions, unique, self._log_likelihoods(prompts, unique, batch_size),
                                       strict=True):
            mean = {c: lp / max(1, n) for c, (lp, n) in zip(kinds, scores, strict=True)}
            top = max(mean.values(), default=0.0)
            out.append([math.exp(WEIGHT_SHARPNESS * (mean[c] - top)) for c in caps])
        return out

    @checked
    def candidates(
        self,
        records: Sequence[dict],
        n: PositiveInt,
        mode: Literal["beam", "sample"] = "beam",
        num_beams: PositiveInt = 1,
        batch_size: PositiveInt | None = None,
        max_new_tokens: PositiveInt | None = None,
        progress: bool = False,
        seed: int = 0,
        prompts: Sequence[str] | None = None,
    ) -> list[list[str]]:
        """``n`` candidate captions per record: the n best of a beam search of width max(n, num_beams), or n samples
        (nucleus, top-p 0.9; torch seeded with ``seed`` per batch, so the same call gives the same samples).
        ``prompts``: the records' prompt texts when the caller has them already (:meth:`prompts`)."""
        prompts = self.prompts(records) if prompts is None else prompts
        return self._generate(prompts, n, mode, num_beams, batch_size, max_new_tokens, progress, seed)

    def _generate(self, prompts, n, mode, num_beams, batch_size, max_new_tokens, progress, seed) -> list[list[str]]:
        sample = mode == "sample" and n > 1
        beams = 1 if sample else max(n, num_beams)
        bs = batch_size or self.batch_size
        new = max_new_tokens or self.max_new_tokens
        tok = self.tokenizer
        keep = max(2, self.max_length - new)  # prompt tokens that fit with the caption
        ids = []
        for text in prompts:
            p = prompt_ids(tok, text)
            if len(p) > keep:  # as in training: drop the prompt's start, keep BOS
                p = p[:1] + p[len(p) - keep + 1 :] if tok.bos_token_id is not None else p[-keep:]
            ids.append(p)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths share a batch
        out: list[list[str]] = [[] for _ in ids]
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        what = f"{n} samples" if sample else f"beams={beams}" + (f", {n} candidates" if n > 1 else "")

        for batch in Progress(batches, desc=f"captioning ({what})", unit="batch", enabled=progress):
            width = max(len(ids[i]) for i in batch)
            x = torch.full((len(batch), width), tok.pad_token_id, dtype=torch.long)  # (B, T), padded on the left
            mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
            for r, i in enumerate(batch):
                x[r, width - len(ids[i]) :] = torch.tensor(ids[i])
                mask[r, width - len(ids[i]) :] = 1
            if sample:
                torch.manual_seed(seed)
            gen = self.model.generate(
                input_ids=x.to(self.device),
                attention_mask=mask.to(self.device),
                max_new_tokens=new,
                min_new_tokens=1,  # never an empty caption (EOS first), which scoring refuses
                num_beams=beams,
                num_return_sequences=n,
                do_sample=sample,
                **({"top_p": 0.9, "top_k": 0, "temperature": 1.0} if sample else {}),
                early_stopping=beams > 1,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )  # (B * n, T + new): each prompt's n sequences together
            for r, i in enumerate(batch):
                out[i] = [clean_caption(tok.decode(gen[r * n + j, width:], skip_special_tokens=True)) for j in range(n)]
        return out


def consensus_problems(consensus: int, pool: int = 0, train_images: int | None = None,
                       where: str = "the model's index") -> list[str]:
    """What is wrong with ``--consensus`` / ``--consensus-pool`` together (llm.generate, pipeline.caption and
    pipeline.archive check alike; each types ``consensus_pool`` as ``NonNegativeInt``, so ``pool`` is >= 0 here).

    ``train_images``: how many training images the pool is drawn from (:func:`index_images`), when known: a pool
    larger than that is refused, not quietly cut (every training image's captions would vote, and the consensus
    compares every pair of votes: minutes per image on a real caption set)."""
    problems = []
    if consensus < 0 or consensus == 1:
        problems.append(f"--consensus must be 0 (off) or at least 2 candidates (got {consensus})")
    if pool and consensus < 2:
        problems.append(f"--consensus-pool {pool} needs --consensus N (N >= 2 candidates) to choose among")
    if pool > 0 and train_images is not None and pool > train_images:
        problems.append(pool_problem(pool, train_images, where))
    return problems


def pool_problem(pool: int, train_images: int, where: str, option: str = "--consensus-pool") -> str:
    """The message for a consensus pool of more training images than there are."""
    return (f"{option} {pool} is more than the {train_images} training images its votes come from ({where}); "
            f"give at most {train_images}: each image's consensus compares every pair of the pool's captions, so "
            f"its time grows with the square of the pool (the measured setting is 5)")


def index_images(model_dir: str | Path) -> int | None:
    """How many training images the index beside a model holds (the most a consensus pool can draw from); None when
    the model folder has no index (or it cannot be read: the Captioner says why)."""
    path = Path(model_dir) / INDEX_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return int(z["names"].shape[0])
    except (OSError, ValueError, KeyError):
        return None


def clean_caption(text: str) -> str:
    """The caption part of generated text: first line, single spaces."""
    text = text.strip().split("\n", 1)[0]
    return " ".join(text.split())


@checked
def main(
    model: Path,
    compositions: Path,
    out: Path,
    captions: Path | None = None,
    split: Literal["test", "val", "train", "restval"] = "test",
    num_beams: PositiveInt = 1,
    consensus: int = 0,
    candidates: Literal["beam", "sample"] = "beam",
    consensus_pool: NonNegativeInt = 0,
    seed: int = 0,
    batch_size: PositiveInt = 64,
    max_new_tokens: PositiveInt = 40,
    allow_missing: bool = False,
    threads: PositiveInt | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Caption the images of one split from their compositions; write COCO results JSON.

    Args:
        model: model folder written by llm.finetune.
        compositions: composition records (JSON Lines, segcap.composition/1 or /2).
        out: predictions file to write ([{"image_id": filename, "caption": ...}]).
        captions: caption set (dataset_rsicd.json or its folder) naming the images of each split; without it every
            record is captioned.
        split: caption-set split to caption (with --captions).
        num_beams: 1 = greedy; more = beam search with that many beams.
        consensus: N >= 2: generate N candidates per image and keep the one with the highest CIDEr-D against the
            others (consensus / minimum-Bayes-risk decoding); 0 = off.
        candidates: where consensus candidates come from: beam (the N best of a beam search of width
            max(N, num_beams), weighted by the model's probability of each) or sample (N nucleus samples, top-p 0.9,
            seeded; counted alike).
        consensus_pool: K > 0: the consensus also counts every caption of the K training images whose compositions
            are closest (weighted like the candidates, and a candidate itself): the neighbours vote and the model
            weighs each vote by how probable it finds that caption for this composition. Needs --consensus.
        seed: seed of the samples (candidates sample).
        batch_size: prompts per generate call.
        max_new_tokens: longest caption in tokens.
        allow_missing: skip split images without a composition instead of stopping.
        threads: torch CPU threads; empty: torch's default.
        progress: show progress (a bar on a terminal, one line in a log).
        overwrite: replace an existing predictions file.
    """
    problems = consensus_problems(consensus, consensus_pool, index_images(model) if consensus_pool > 0 else None,
                                   str(Path(model) / INDEX_FILE))
    for what, p in (("model folder", model), ("compositions", compositions), ("captions", captions)):
        if p is not None and not Path(p).exists():
            problems.append(f"{what} not found: {p}")
    if problems:
        raise ConfigError(problems)
    check_writable(out, overwrite, "predictions file")
    if threads:
        torch.set_num_threads(threads)


    records = read_jsonl(compositions)
    if captions is not None:
        capset = CaptionDataset(captions)
        pairs = join_records(records, capset, [split], compositions, allow_missing)
        chosen, names = [rec for rec, _ in pairs], [it.filename for _, it in pairs]
    else:
        chosen, names = list(records), [rec["image"] for rec in records]

    captioner = Captioner(model, batch_size=batch_size, max_new_tokens=max_new_tokens)
    if consensus_pool:
        captioner.require_index("--consensus-pool")
    t0 = time.perf_counter()
    caps = captioner.caption(chosen, num_beams=num_beams, progress=progress, consensus=consensus,
                             candidates=candidates, seed=seed, pool=consensus_pool)
    dt = time.perf_counter() - t0
    write_json(out, [{"image_id": n, "caption": c} for n, c in zip(names, caps, strict=True)])
    how = f"beams={num_beams}" + (f", consensus of {consensus} {candidates} candidates" if consensus else "") + (
        f" and the captions of {consensus_pool} neighbours" if consensus_pool else "")
    print(f"wrote {out}: {len(caps)} captions in {dt:.1f} s ({len(caps) / max(dt, 1e-9):.1f} captions/s, {how})",
          flush=True)
    return Path(out)


if __name__ == "__main__":
    run(main)
