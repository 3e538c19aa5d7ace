"""A composition record as the short prompt text the captioning LM reads.

    from composition.text import to_prompt
    to_prompt(record)
    # 'vegetation 61% center, 3 regions; water 20% center, 1 region, compact; water surrounded by vegetation'

Rules (changing them changes every trained model, so they are versioned by :data:`PROMPT_VERSION`):

- one clause per class in record order (largest first): ``NAME P% POSITION, N region(s)`` and, for a class under
  half the image, a shape word from the largest region's elongation: ``compact`` (< 1.6), ``long`` (>= 3);
  P is the percent rounded half up, ``<1%`` under 0.5;
- then one clause per relation: ``SUBJECT RELATION OBJECT``;
- clauses joined by ``"; "``. Words only (no JSON, no decimals), so a small tokenizer learns it; about 40-60 tokens
  for a typical image. Unlabeled counts as a class like any other (a large unlabeled share is worth saying).
"""

from __future__ import annotations

import math

from composition.schema import SCHEMA_ID

PROMPT_VERSION = f"{SCHEMA_ID}+prompt/1"
COMPACT_BELOW = 1.6
LONG_FROM = 3.0


def percent_words(p: float) -> str:
    """61.3 -> '61%', 0.4 -> '<1%' (rounded half up, so the text never depends on float banker's rounding)."""
    n = math.floor(p + 0.5)
    return "<1%" if n < 1 else f"{n}%"


def shape_word(elongation: float) -> str | None:
    if elongation < COMPACT_BELOW:
        return "compact"
    if elongation >= LONG_FROM:
        return "long"
    return None


def class_clause(c: dict) -> str:
    regions = c["regions"]
    parts = [f"{c['name']} {percent_words(c['percent'])} {c['position']}", f"{regions} region{'s' if regions != 1 else ''}"]
    if c["percent"] < 50:
        word = shape_word(c["elongation"])
        if word:
            parts.append(word)
    return ", ".join(parts)


def to_prompt(record: dict) -> str:
    """The prompt text of one record: deterministic, short, word-based (see the module docstring)."""
    clauses = [class_clause(c) for c in record["classes"]]
    clauses += [f"{r['subject']} {r['relation']} {r['object']}" for r in record["relations"]]
    return "; ".join(clauses)
