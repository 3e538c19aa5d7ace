"""A composition record as the short prompt text the captioning LM reads.

    from composition.text import to_prompt
    to_prompt(record)
    # 'vegetation 61% center, 3 regions; water 20% center, 1 region, compact; water surrounded by vegetation'
    to_prompt(record_with_scenes)
    # 'scene: pond 93%, river 4%, meadow 1%\nvegetation 61% center, 3 regions; water 20% center, ...'

Rules (changing them changes every trained model, so they are versioned by :data:`PROMPT_VERSION`):

- one clause per class in record order (largest first): ``NAME P% POSITION, N region(s)`` and, for a class under
  half the image, a shape word from the largest region's elongation: ``compact`` (< 1.6), ``long`` (>= 3);
  P is the percent rounded half up, ``<1%`` under 0.5;
- then one clause per relation: ``SUBJECT RELATION OBJECT``;
- clauses joined by ``"; "``. Words only (no JSON, no decimals), so a small tokenizer learns it; about 40-60 tokens
  for a typical image. Unlabeled counts as a class like any other (a large unlabeled share is worth saying).
- a record with scenes (``segcap.composition/2``) starts with one more line, before the clauses:
  ``scene: NAME P%, NAME P%, ...`` in record order (most probable first), P the probability in percent, rounded half
  up like the class percents. Scenes after the first that round to under 1% are left out (noise to the LM; the
  record keeps them); the first is always said (``<1%`` if it comes to that). Then a newline, then the clauses.
  :func:`split_prompt` takes the two parts apart again (the LM's ``composition`` and ``scene`` prompt modes).

A record without scenes renders exactly as before scenes existed (``/1`` or ``/2`` alike), so :data:`PROMPT_VERSION`
stays ``segcap.composition/1+prompt/1``: every model trained on scene-less text reads the same text as it did.
"""

from __future__ import annotations

import math

# Not derived from SCHEMA_ID: the schema's /2 added the scene line, which scene-less records never show.
PROMPT_VERSION = "segcap.composition/1+prompt/1"
SCENE_PREFIX = "scene: "
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


def scene_line(record: dict) -> str:
    """``'scene: airplane 93%, runway 4%, freeway 1%'`` for a record with scenes, ``''`` without."""
    scenes = record.get("scenes") or []
    said = [f"{s['name']} {percent_words(100.0 * s['probability'])}" for i, s in enumerate(scenes)
            if i == 0 or math.floor(100.0 * s["probability"] + 0.5) >= 1]
    return SCENE_PREFIX + ", ".join(said) if said else ""


def composition_text(record: dict) -> str:
    """The clauses of the classes and relations: the whole prompt text of a record without scenes."""
    clauses = [class_clause(c) for c in record["classes"]]
    clauses += [f"{r['subject']} {r['relation']} {r['object']}" for r in record["relations"]]
    return "; ".join(clauses)


def to_prompt(record: dict) -> str:
    """The prompt text of one record: deterministic, short, word-based (see the module docstring)."""
    scene = scene_line(record)
    return f"{scene}\n{composition_text(record)}" if scene else composition_text(record)


def split_prompt(text: str) -> tuple[str, str]:
    """(scene line, composition clauses) of a text of :func:`to_prompt`; ``''`` for the part it lacks."""
    if text.startswith(SCENE_PREFIX):
        scene, _, rest = text.partition("\n")
        return scene, rest
    return "", text
