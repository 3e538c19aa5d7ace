"""Tokenizers and token-level batching for prompt -> caption training.

* :func:`train_tokenizer` trains the tiny model's tokenizer on the training text (prompts + captions) with the
  ``tokenizers`` library: a byte-level BPE (``kind: bpe``, exact round trip, no unknown characters) or a word-level
  vocabulary (``kind: word``, shortest sequences), wrapped in :class:`transformers.PreTrainedTokenizerFast` with
  ``<s>``, ``</s>``, ``<pad>`` and ``<unk>``.
* :func:`encode_example` turns one (prompt, caption) pair into ``input_ids`` and ``labels`` where the labels are -100
  on the prompt (loss on the caption tokens only) and the caption ends with EOS.
* :class:`CaptionCollator` pads a batch on the right (training) with labels -100 on padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from segcap.errors import ConfigError

IGNORE_INDEX = -100
SPECIAL = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
TOKENIZER_KINDS = ("bpe", "word")


def tokenizer_problems(settings: dict) -> list[str]:
    """Everything wrong with a ``tokenizer:`` settings mapping (kind, vocab_size, min_frequency)."""
    out = []
    unknown = sorted(set(settings) - {"kind", "vocab_size", "min_frequency"})
    if unknown:
        out.append(f"tokenizer: unknown key(s) {', '.join(unknown)}; valid: kind, vocab_size, min_frequency")
    kind = settings.get("kind", "bpe")
    if kind not in TOKENIZER_KINDS:
        out.append(f"tokenizer.kind {kind!r} is not one of {', '.join(TOKENIZER_KINDS)}")
    vs = settings.get("vocab_size", 2048)
    if not isinstance(vs, int) or vs < (300 if kind == "bpe" else 8):
        out.append(f"tokenizer.vocab_size {vs!r} is too small (byte-level BPE needs at least 300: 256 bytes + specials)")
    mf = settings.get("min_frequency", 1)
    if not isinstance(mf, int) or mf < 1:
        out.append(f"tokenizer.min_frequency {mf!r} must be an integer >= 1")
    return out


def train_tokenizer(
    texts: Iterable[str], kind: str = "bpe", vocab_size: int = 2048, min_frequency: int = 1
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on ``texts`` and wrap it with bos/eos/pad/unk (ids 0..3 are the special tokens)."""
    problems = tokenizer_problems({"kind": kind, "vocab_size": vocab_size, "min_frequency": min_frequency})
    if problems:
        raise ConfigError(problems)
    specials = [SPECIAL["pad_token"], SPECIAL["bos_token"], SPECIAL["eos_token"], SPECIAL["unk_token"]]
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    else:
        tok = Tokenizer(models.WordLevel(unk_token=SPECIAL["unk_token"]))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()  # words and punctuation runs; decoded joined by spaces
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials, show_progress=False
        )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        clean_up_tokenization_spaces=(kind == "word"),  # "pond ." -> "pond." for word-level decoding
        model_max_length=4096,
        **SPECIAL,
    )


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Checkpoints such as Llama-2 have no pad token: use unk (else eos). Padding never carries loss either way."""
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token is not None else tokenizer.eos_token


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str) -> list[int]:
    """BOS (when the tokenizer has one) + the prompt's tokens: exactly what generation feeds the model."""
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ([tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []) + list(ids)


def encode_example(
    tokenizer: PreTrainedTokenizerBase, prompt: str, caption: str, max_length: int = 512
) -> dict[str, list[int]]:
    """Token ids and labels of one example: labels are -100 on the prompt, the caption's ids, then EOS.

    The caption's tokens are those that follow the prompt's tokens when ``prompt + " " + caption`` is tokenized
    (so subword tokenizers that merge across the boundary still agree with generation, which starts from the
    prompt's tokens). A too-long example loses prompt tokens from its start (after BOS), never its caption.
    """
    p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full = tokenizer(prompt + " " + caption, add_special_tokens=False)["input_ids"]
    if full[: len(p)] == p:
        c = full[len(p) :]
    else:  # the tokenizer merged across the boundary: tokenize the caption alone
        c = tokenizer(" " + caption, add_special_tokens=False)["input_ids"]
    c = list(c) + [tokenizer.eos_token_id]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    room = max_length - len(bos) - len(c)
    if room < 1:
        c = c[: max(1, max_length - len(bos) - 1)]
        room = max_length - len(bos) - len(c)
    p = list(p)[-room:] if room > 0 else []
    ids = bos + p + c
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * (len(bos) + len(p)) + c}


class TokenizedExamples(torch.utils.data.Dataset):
    """A map-style dataset over (prompt, caption) pairs (e.g. :class:`llm.examples.CaptionExamples`), tokenized on
    access so that "one caption sampled per epoch" sees the epoch's draw."""

    def __init__(self, pairs, tokenizer: PreTrainedTokenizerBase, max_length: int = 512):
        self.pairs = pairs
        self.tokenizer = tokenizer
        self.max_length = max_length

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.pairs, "set_epoch"):
            self.pairs.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        prompt, caption = self.pairs[i]
        return encode_example(self.tokenizer, prompt, caption, self.max_length)


@dataclass
class CaptionCollator:
    """Pad ``input_ids``/``labels`` on the right: pad id, attention mask 0, label -100 on padding."""

    pad_token_id: int
    pad_to_multiple_of: int | None = 8

    def __call__(self, batch: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        n = max(len(b["input_ids"]) for b in batch)
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            n = (n + m - 1) // m * m
        ids = torch.full((len(batch), n), self.pad_token_id, dtype=torch.long)  # (B, T)
        labels = torch.full((len(batch), n), IGNORE_INDEX, dtype=torch.long)  # (B, T)
        mask = torch.zeros((len(batch), n), dtype=torch.long)  # (B, T)
        for i, b in enumerate(batch):
            k = len(b["input_ids"])
            ids[i, :k] = torch.tensor(b["input_ids"])
            labels[i, :k] = torch.tensor(b["labels"])
            mask[i, :k] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
