"""Caption words and the word vocabulary of the CNN+LSTM (and of the tiny ViT-GPT2's tokenizer).

Words are the lowercase runs of letters and digits of a caption (``"A pond, isn't it?"`` -> ``a pond isn't it``);
punctuation is dropped, as the Karpathy ``tokens`` field and the COCO scorer's PTB tokenizer drop it. The vocabulary
keeps the words seen at least ``min_count`` times in the training captions, most frequent first, after four special
words with fixed ids: ``<pad>`` 0, ``<start>`` 1, ``<end>`` 2, ``<unk>`` 3 (every rarer word).

    vocab = Vocabulary.build(train_captions, min_count=5)
    ids = vocab.encode("A pond surrounded by trees .", max_length=30)   # [1, 17, 42, ..., 2]
    vocab.decode(ids)                                                   # "a pond surrounded by trees"
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from segcap.atomic import write_json
from segcap.errors import DataError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
PAD_ID, START_ID, END_ID, UNK_ID = range(4)
VOCAB_FILE = "vocab.json"

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")


def words(caption: str) -> list[str]:
    """The lowercase words of a caption, punctuation dropped."""
    return _WORD.findall(caption.lower().replace("’", "'"))


def normalize(caption: str) -> str:
    """A caption as its words joined by single spaces (what the captioners learn and write)."""
    return " ".join(words(caption))


class Vocabulary:
    """Word <-> id, with ``<pad>``, ``<start>``, ``<end>`` and ``<unk>`` first.

    Args:
        itos: every word in id order, the four special words first.
        min_count: the minimum count it was built with (recorded only).
    """

    def __init__(self, itos: Sequence[str], min_count: int = 1):
        if tuple(itos[:4]) != SPECIALS:
            raise DataError(f"a vocabulary must start with {', '.join(SPECIALS)} (got {list(itos[:4])})")
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.min_count = min_count

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 5) -> Vocabulary:
        """The words of ``captions`` seen at least ``min_count`` times, most frequent first (ties alphabetical)."""
        counts = Counter(w for c in captions for w in words(c))
        kept = sorted((w for w, n in counts.items() if n >= min_count and w not in SPECIALS),
                      key=lambda w: (-counts[w], w))
        return cls([*SPECIALS, *kept], min_count)

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, caption: str, max_length: int = 30) -> list[int]:
        """``<start>``, the ids of the first ``max_length`` words (``<unk>`` for unknown ones), ``<end>``."""
        ids = [self.stoi.get(w, UNK_ID) for w in words(caption)[:max_length]]
        return [START_ID, *ids, END_ID]

    def decode(self, ids: Iterable[int]) -> str:
        """The words of ``ids`` up to the first ``<end>``, special words (``<unk>`` too) left out, joined by spaces."""
        out = []
        for i in map(int, ids):
            if i == END_ID:
                break
            if UNK_ID < i < len(self.itos):  # <pad>, <start> and <unk> are not written
                out.append(self.itos[i])
        return " ".join(out)

    def unknown_rate(self, captions: Iterable[str]) -> float:
        """The share of words of ``captions`` that map to ``<unk>``."""
        n = unk = 0
        for c in captions:
            for w in words(c):
                n += 1
                unk += w not in self.stoi
        return unk / n if n else 0.0

    def save(self, path: str | Path) -> Path:
        return write_json(path, {"format": "segcap.vocab/1", "min_count": self.min_count, "words": self.itos})

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(list(raw["words"]), int(raw.get("min_count", 1)))
        except FileNotFoundError as e:
            raise DataError(f"{path}: vocabulary not found; the model folder is incomplete, train it again") from e
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise DataError(f"{path}: not a segcap vocabulary ({e}); the model folder is damaged, train it again") from e
