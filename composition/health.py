"""Diversity of a set of compositions: the health figure of DESIGN's lessons, and the flags of a degenerate set.

The seed's segmenter saw "artificial surface ~95%" in every RSICD tile: 266 distinct prompts for 1,092 images, 899 of
them naming a single class. Such compositions give the caption model nothing to say. :func:`health` measures it, and
flags the two symptoms of that failure:

- **one class dominant**: the same class covers most of the image (``DOMINANT_PERCENT``) in most images
  (``DOMINANT_IMAGES``);
- **few class orders**: the images' class orders (their class names, largest first) take few values. Counted as an
  effective number, ``exp`` of the orders' entropy: as many equally common orders as would spread the images as
  evenly, so that a few stray images do not hide a set where nearly every record reads the same.

Both are judged from ``MIN_IMAGES`` records on; read them beside the same figures on exact-mask compositions, where
the caption set has masks: a flag the exact masks share is the data's, not the segmenter's.
"""

from __future__ import annotations

import math
from collections import Counter

from composition.text import to_prompt

# Thresholds of the flags. Measured on the demo's synthetic test set (1,000 images, 12 categories): the class that
# most often covers >= 75% of an image does so in 47% of the images (exact masks and predicted alike), and class
# orders number 29 (exact masks) to 39 (predicted) effective; the seed had one class at ~95% in every image and most
# records naming that class alone (a few effective orders at most).
DOMINANT_PERCENT = 75.0  # a class dominates an image when it covers at least this share of it
DOMINANT_IMAGES = 2 / 3  # flag "one class dominant" when one class dominates at least this share of the images
ORDER_MIN_PERCENT = 1.0  # classes below this share are left out of an image's class order (stray pixels)
FEW_ORDERS = 10.0  # flag "few class orders" when their effective number is below this
MIN_IMAGES = 20  # below this many records there are no flags: too few images to judge


def class_order(record: dict) -> tuple[str, ...]:
    """The record's class names, largest first, without classes under ``ORDER_MIN_PERCENT``."""
    return tuple(c["name"] for c in record["classes"] if c["percent"] >= ORDER_MIN_PERCENT)


def effective_number(counts: Counter) -> float:
    """``exp`` of the Shannon entropy of the counts: n for n equally common values, near 1 when one value prevails."""
    total = sum(counts.values())
    entropy = -sum(n / total * math.log(n / total) for n in counts.values() if n)
    return math.exp(entropy)


def health(records: list[dict]) -> dict:
    """Figures over a list of composition records.

    Returns: images; distinct prompts (and their share); mean classes per record; records naming a single class;
    the most common largest class and its share; the class that most often dominates an image and the share of
    images it dominates; distinct and effective class orders; and ``flags``, a list of the degenerate-set symptoms
    found (empty when none, or when there are fewer than ``MIN_IMAGES`` records: see :func:`flags_text`).
    """

    if not records:
        return {"images": 0}
    n = len(records)
    prompts = Counter(to_prompt(r) for r in records)
    classes = [len(r["classes"]) for r in records]
    top = Counter(r["classes"][0]["name"] if r["classes"] else "" for r in records)
    top_name, top_n = top.most_common(1)[0]
    dominated = Counter(r["classes"][0]["name"] for r in records
                        if r["classes"] and r["classes"][0]["percent"] >= DOMINANT_PERCENT)
    dom_name, dom_n = dominated.most_common(1)[0] if dominated else ("none", 0)
    orders = Counter(class_order(r) for r in records)
    effective = effective_number(orders)

    flags = []
    if n >= MIN_IMAGES and dom_n / n >= DOMINANT_IMAGES:
        flags.append(f"one class dominant: {dom_name} covers >= {DOMINANT_PERCENT:.0f}% of the image in "
                     f"{100 * dom_n / n:.0f}% of the images (flag from {100 * DOMINANT_IMAGES:.0f}%)")
    if n >= MIN_IMAGES and effective < FEW_ORDERS:
        flags.append(f"few class orders: {effective:.1f} effective, {len(orders)} distinct, for {n} images "
                     f"(flag below {FEW_ORDERS:g} effective)")
    return {
        "images": n,
        "distinct prompts": len(prompts),
        "distinct share": round(len(prompts) / n, 3),
        "classes per record": round(sum(classes) / n, 2),
        "single-class records": sum(1 for k in classes if k == 1),
        "most common largest class": f"{top_name} ({100 * top_n / n:.0f}%)",
        f"class >= {DOMINANT_PERCENT:.0f}%": f"{dom_name} ({100 * dom_n / n:.0f}%)",
        "distinct class orders": len(orders),
        "effective class orders": round(effective, 1),
        "flags": flags,
    }


def flags_text(figures: dict) -> str:
    """The flags of :func:`health`'s figures as one phrase: the symptoms, "no flags", or why they were not judged."""
    if not figures.get("images"):
        return "no compositions"
    if figures["images"] < MIN_IMAGES:
        return f"not judged (fewer than {MIN_IMAGES} images)"
    return "; ".join(figures["flags"]) or "no flags"
