"""Consensus (minimum-Bayes-risk) choice among candidate captions, by CIDEr-D against the other candidates.

Given N candidates for one image (beam search's N best, or N samples), each is scored by its CIDEr-D against the other
N - 1 as references, and the highest wins: the caption the candidates agree on, rather than the single most probable
one. CIDEr-D rather than BLEU, because it is the metric the chain is judged by, and because its n-gram weights
(tf-idf, idf from the training captions) make agreement on words that tell images apart (the classes, their places)
count, and agreement on words every caption has ("there are", "in the") count little, where BLEU counts both alike and
favours short, generic candidates. The formula is pycocoevalcap's CIDEr-D (n = 1..4, clipped counts, Gaussian length
penalty with sigma 6, times 10); here the document frequencies come from the model's training captions
(:func:`document_frequencies`, saved with the model as ``ngram_df.json``), so a choice never depends on which other
images are captioned in the same call.

Weighted (:meth:`CiderD.choose` with ``weights``): each candidate's agreement is the weighted sum of its CIDEr-D with
the others, i.e. its expected CIDEr-D when the reference is drawn from the candidates with those probabilities
(minimum Bayes risk, Kumar and Byrne 2004). Repeated captions count once per occurrence: they are votes.

    df = document_frequencies(train_caption_lists)            # {"documents": N, "df": {"a pond": 12, ...}}
    scorer = CiderD(df)
    scorer.choose(["a pond near trees .", "a pond .", ...])    # index of the consensus candidate
    scorer.choose(candidates, weights=[0.5, 0.2, ...])         # each candidate as a reference with that weight
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

NGRAM_FILE = "ngram_df.json"  # in a model folder: document frequencies of the training captions' n-grams
MAX_N = 4
SIGMA = 6.0
WORD = re.compile(r"[\w']+(?:-[\w']+)*")  # a word: letters, digits, apostrophes, inner hyphens; the rest is punctuation


def words(caption: str) -> list[str]:
    """The caption's lowercased words without punctuation, as COCO scoring sees them after the PTB tokenizer drops
    punctuation: "neatly." and "neatly ." are both ``["neatly"]`` (the LM writes the one, the caption sets the other),
    while "it's" and "well-known" stay whole."""
    return WORD.findall(caption.lower())


def _ngrams(caption: str, n_max: int = MAX_N) -> Counter:
    """Counts of the 1..n_max-grams of a caption's :func:`words` (keys: the n-gram's words joined by a space)."""
    w = words(caption)
    return Counter(" ".join(w[i : i + n]) for n in range(1, n_max + 1) for i in range(len(w) - n + 1))


def document_frequencies(captions: Sequence[Sequence[str]]) -> dict:
    """For each n-gram, the number of images (caption lists) it occurs in; n-grams of one image only are left out
    (CIDEr-D gives them the same weight as unseen ones). JSON-ready: ``{"documents": N, "df": {...}}``."""
    df: Counter = Counter()
    for caps in captions:
        seen: set[str] = set()
        for c in caps:
            seen.update(_ngrams(c))
        df.update(seen)
    return {"documents": len(captions), "df": {g: n for g, n in sorted(df.items()) if n > 1}}


class CiderD:
    """CIDEr-D between one caption and a set of references, with fixed document frequencies.

    Args:
        frequencies: :func:`document_frequencies`' result; None weighs every n-gram alike (a model folder from before
            ``ngram_df.json`` existed).
    """

    def __init__(self, frequencies: dict | None):
        self.df = (frequencies or {}).get("df") or {}
        documents = int((frequencies or {}).get("documents") or 0)
        self.log_docs = math.log(documents) if documents > 1 else None  # None: uniform weights

    def _vector(self, caption: str) -> tuple[list[dict[str, float]], list[float], int]:
        """tf-idf vectors per n, their norms, and the caption's length (in bigrams, as pycocoevalcap counts it)."""
        vec: list[dict[str, float]] = [{} for _ in range(MAX_N)]
        norm = [0.0] * MAX_N
        for gram, tf in _ngrams(caption).items():
            n = gram.count(" ")
            weight = 1.0 if self.log_docs is None else self.log_docs - math.log(max(1.0, self.df.get(gram, 0)))
            vec[n][gram] = tf * weight
            norm[n] += (tf * weight) ** 2
        return vec, [math.sqrt(x) for x in norm], max(0, len(words(caption)) - 1)

    @staticmethod
    def _sim(hyp, ref) -> float:
        (vh, nh, lh), (vr, nr, lr) = hyp, ref
        penalty = math.exp(-((lh - lr) ** 2) / (2 * SIGMA**2))
        total = 0.0
        for n in range(MAX_N):
            dot = sum(min(v, vr[n].get(g, 0.0)) * vr[n].get(g, 0.0) for g, v in vh[n].items())
            if nh[n] and nr[n]:
                total += dot / (nh[n] * nr[n]) * penalty
        return total / MAX_N

    def score(self, caption: str, references: Sequence[str]) -> float:
        """CIDEr-D of ``caption`` against ``references`` (0 without references)."""
        if not references:
            return 0.0
        hyp = self._vector(caption)
        return 10.0 * sum(self._sim(hyp, self._vector(r)) for r in references) / len(references)

    def agreement(self, candidates: Sequence[str], weights: Sequence[float] | None = None) -> list[float]:
        """Each candidate's CIDEr-D against all the others: their mean, or with ``weights`` (one per candidate, >= 0)
        the sum weighted by the others' weights (a candidate's own weight does not count for itself), on the scale of
        the mean. A caption that occurs twice scores itself through the other occurrence (a vote)."""
        if weights is not None and len(weights) != len(candidates):
            raise ValueError(f"{len(weights)} weights for {len(candidates)} candidates")
        w = [1.0] * len(candidates) if weights is None else [float(x) for x in weights]
        if any(x < 0 or not math.isfinite(x) for x in w):
            raise ValueError("candidate weights must be finite and >= 0")
        unique = list(dict.fromkeys(candidates))  # the same caption is vectorised and compared once
        vecs = {c: self._vector(c) for c in unique}
        sims: dict[tuple[str, str], float] = {}
        for i, a in enumerate(unique):
            for b in unique[i:]:
                sims[a, b] = sims[b, a] = 10.0 * self._sim(vecs[a], vecs[b])
        n = len(candidates)
        # one scale for every candidate (the ranking is the unnormalised weighted sum): with equal weights, the mean
        # over the others
        scale = sum(w) * (n - 1) / n if n > 1 else 0.0
        return [sum(w[j] * sims[hyp, ref] for j, ref in enumerate(candidates) if j != i) / scale if scale > 0 else 0.0
                for i, hyp in enumerate(candidates)]

    def choose(self, candidates: Sequence[str], weights: Sequence[float] | None = None) -> int:
        """The index of the candidate the others agree with most, weighted by ``weights`` when given (ties: the
        earlier, i.e. the more probable)."""
        if not candidates:
            raise ValueError("no candidates to choose from")
        scores = self.agreement(candidates, weights)
        return max(range(len(candidates)), key=lambda i: (scores[i], -i))
