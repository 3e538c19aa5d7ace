"""What the segmenter sees in each scene class, beside what the captions say is there.

On a real caption set the only check of the compositions is the captions themselves: a caption that says "many
buildings and green trees" names the groups building and vegetation. :func:`caption_groups` reads the groups a
caption names through a word list (``configs/classes/caption_words.yaml``); :func:`evidence` sets, for each scene
class, the mean share of each group in the predicted compositions beside the share of captions that name it, and
counts how often a group that most of an image's captions name (``NAMED_BY``) is found by the segmenter (at least
``FOUND_PERCENT`` of the image): the recall of the composition against the captions' words.

    words = load_caption_words()
    figures = evidence(records, dataset.references(), dataset.categories(), words)
    print("\\n".join(evidence_md(figures)))
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from segcap.errors import ConfigError
from segcap.options import load_yaml
from segcap.resources import shipped

CAPTION_WORDS_PATH = shipped("classes", "caption_words.yaml")  # configs/classes/caption_words.yaml, shipped
NAMED_BY = 0.5  # a group counts as named in an image when at least this share of its captions name it
FOUND_PERCENT = 5.0  # ... and as found by the segmenter when it covers at least this share of the image
_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def load_caption_words(path: str | Path | None = None) -> dict[str, frozenset[str]]:
    """group name -> the caption words that name it, from a YAML mapping of group names to word lists."""
    path = Path(path) if path else CAPTION_WORDS_PATH
    raw = load_yaml(path)
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise ConfigError(f"{path}: expected a mapping of group names to lists of words")
    return {str(g): frozenset(str(w).lower() for w in ws) for g, ws in raw.items()}


def caption_groups(caption: str, words: dict[str, frozenset[str]]) -> set[str]:
    """The groups a caption names (lower-cased words, punctuation dropped)."""
    tokens = set(_WORD.findall(caption.lower()))
    return {g for g, ws in words.items() if tokens & ws}


def evidence(records: list[dict], references: dict[str, list[str]], categories: dict[str, str],
             words: dict[str, frozenset[str]]) -> dict:
    """Per scene class: images, the mean percent of each group in the records, the share of captions naming each
    group; overall: named groups found by the segmenter (recall) and found groups that the captions name
    (precision), over the records whose image is in ``references``.

    ``records`` are composition records (their ``image`` names the caption-set file, possibly with another
    extension); ``references`` and ``categories`` are keyed by caption-set filename.
    """
    by_stem = {Path(name).stem: name for name in references}
    groups = list(words)
    per: dict[str, dict] = defaultdict(lambda: {"images": 0, "percent": defaultdict(float),
                                                "named": defaultdict(float)})
    named_total = named_found = found_total = found_named = 0
    for rec in records:
        name = by_stem.get(Path(rec["image"]).stem)
        if name is None:
            continue
        caps = references[name]
        entry = per[categories.get(name, "unknown")]
        entry["images"] += 1
        percent = {c["name"]: c["percent"] for c in rec["classes"]}
        for g in groups:
            entry["percent"][g] += percent.get(g, 0.0)
        named_counts: dict[str, int] = defaultdict(int)
        for cap in caps:
            for g in caption_groups(cap, words):
                named_counts[g] += 1
        for g, n in named_counts.items():
            entry["named"][g] += n / max(1, len(caps))
        named = {g for g, n in named_counts.items() if n >= NAMED_BY * len(caps)}
        found = {g for g in groups if percent.get(g, 0.0) >= FOUND_PERCENT}
        named_total += len(named)
        named_found += len(named & found)
        found_total += len(found)
        found_named += len(found & named)
    classes = {}
    for cat in sorted(per):
        e = per[cat]
        n = e["images"]
        classes[cat] = {"images": n,
                        "percent": {g: round(e["percent"][g] / n, 1) for g in groups},
                        "named": {g: round(e["named"][g] / n, 2) for g in groups}}
    return {"groups": groups, "classes": classes,
            "named_found": round(named_found / named_total, 3) if named_total else None,
            "found_named": round(found_named / found_total, 3) if found_total else None,
            "named_by": NAMED_BY, "found_percent": FOUND_PERCENT}


def _top(values: dict[str, float], n: int, fmt: str, floor: float) -> str:
    best = sorted(((v, g) for g, v in values.items() if v >= floor), reverse=True)[:n]
    return ", ".join(fmt.format(g=g, v=v) for v, g in best) or "none"


def evidence_md(figures: dict, top: int = 3) -> list[str]:
    """The :func:`evidence` figures as a markdown table: per scene class, the groups the segmenter sees most (mean %
    of the image) beside the groups its captions name most (share of captions)."""
    if not figures.get("classes"):
        return []
    lines = ["| class | images | the segmenter sees (mean % of the image) | the captions name (share of captions) |",
             "|---|---:|---|---|"]
    for cat, e in figures["classes"].items():
        seen = _top(e["percent"], top, "{g} {v:.0f}%", 0.5)
        named = _top(e["named"], top, "{g} {v:.0%}", 0.05)
        lines.append(f"| {cat} | {e['images']} | {seen} | {named} |")
    if figures.get("named_found") is not None:
        lines += ["", f"Groups that most of an image's captions name (>= {figures['named_by']:.0%} of them) and the "
                  f"segmenter finds (>= {figures['found_percent']:g}% of the image): {figures['named_found']:.0%}; "
                  f"groups the segmenter finds that the captions name: "
                  + (f"{figures['found_named']:.0%}." if figures.get("found_named") is not None else "n/a.")]
    return lines
