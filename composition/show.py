"""Inspect one composition record: an aligned table, its scenes (when it has them), its prompt text, and optionally an
overlay PNG.

    python -m composition.show runs/compositions.jsonl --index 0
    python -m composition.show runs/compositions.jsonl --image pond_12.jpg \\
        --overlay data/synthetic/rsicd/RSICD_images/pond_12.jpg \\
        --mask data/synthetic/rsicd/label_images_semantic/pond_12.png --source-ids --out runs/pond_12_show.png

The overlay draws the image, the mask's class colours blended over it (when ``--mask`` is given), each class's
minimum enclosing circle (solid), its centre (+) and centroid (x), a label with name and percent, and a legend with
percents, regions and relations, so a person can check the numbers against the picture; a record's scenes (a scene
head's top classes with their probabilities) are printed under its header and drawn under the picture's title.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import cv2
import numpy as np

from aerialdata.classes import ClassTable, load_class_table
from aerialdata.images import read_mask, read_rgb
from composition.schema import read_jsonl
from composition.text import to_prompt
from segcap.atomic import atomic_path, check_writable
from segcap.cli import run
from segcap.errors import ConfigError, DataError
from segcap.options import checked

SHOWN_SIDE = 2048  # a larger image is drawn from a reduced copy (the picture is about 700 px wide)
COLUMNS = ("id", "class", "percent", "position", "regions", "largest %", "centre", "radius", "centroid",
           "elongation", "bbox")


def pick(records: list[dict], index: int | None, image: str | None, where: str) -> dict:
    """The record at ``index`` or the one whose image (or stem) is ``image``; the first by default."""
    if index is not None and image is not None:
        raise ConfigError("pass --index or --image, not both")
    if image is not None:
        for r in records:
            if r["image"] == image or Path(r["image"]).stem == Path(image).stem:
                return r
        raise DataError(f"{where}: no record for image {image!r} ({len(records)} records; e.g. {records[0]['image']!r})")
    index = 0 if index is None else index
    if not -len(records) <= index < len(records):
        raise ConfigError(f"--index {index} out of range: {where} has {len(records)} records")
    return records[index]


def table_text(record: dict) -> str:
    """The record as an aligned plain-text table, then its relations and prompt text."""
    def xy(p):
        return f"({p[0]:.2f}, {p[1]:.2f})"

    rows = [COLUMNS]
    for c in record["classes"]:
        rows.append((str(c["id"]), c["name"], f"{c['percent']:.1f}", c["position"], str(c["regions"]),
                     f"{c['largest_region_percent']:.1f}", xy(c["center"]), f"{c['radius']:.3f}", xy(c["centroid"]),
                     f"{c['elongation']:.2f}", "[" + ", ".join(f"{v:.2f}" for v in c["bbox"]) + "]"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    right = {0, 2, 4, 5, 7, 9}
    lines = [f"{record['image']}  {record['width']}x{record['height']}  ({record['schema']})"]
    if record.get("scenes"):
        lines.append("scenes: " + scenes_text(record))
    for k, r in enumerate(rows):
        lines.append("  ".join(v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths,
                                                                                                        strict=True))))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("relations: " + ("; ".join(f"{r['subject']} {r['relation']} {r['object']}"
                                            for r in record["relations"]) or "(none)"))
    lines.append("prompt: " + to_prompt(record).replace("\n", "\n        "))
    return "\n".join(lines)


def scenes_text(record: dict) -> str:
    """``'airplane 0.931, runway 0.041, freeway 0.004'``: every scene of the record as it holds them ('' without)."""
    return ", ".join(f"{s['name']} {s['probability']:.3f}" for s in record.get("scenes") or [])


def draw_overlay(record: dict, image: np.ndarray, out: Path, table: ClassTable, mask: np.ndarray | None = None,
            alpha: float = 0.45) -> Path:
    """Write the overlay PNG of ``record`` over ``image`` (H, W, 3 uint8), with ``mask`` (H, W group ids) blended."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Circle, Patch


    h, w = image.shape[:2]
    if (w, h) != (record["width"], record["height"]):
        raise DataError(f"image is {w}x{h} but the record {record['image']!r} is {record['width']}x{record['height']}")
    if mask is not None and mask.shape != (h, w):
        raise DataError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the image is {w}x{h}")
    colors = table.colors.astype(np.float32) / 255.0
    if max(h, w) > SHOWN_SIDE:  # the figure shows ~700 px: blend a reduced copy, not a 12000x9000 float image
        f = SHOWN_SIDE / max(h, w)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        mask = None if mask is None else cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
    shown = image.astype(np.float32) / 255.0
    if mask is not None:
        shown = (1 - alpha) * shown + alpha * colors[mask]

    fig = plt.figure(figsize=(11, 6.6), dpi=110)
    ax = fig.add_axes((0.01, 0.16, 0.56, 0.78))
    ax.imshow(shown, extent=(0, w, h, 0), interpolation="nearest")
    side = max(w, h)
    for c in record["classes"]:
        col = colors[c["id"]]
        cx, cy = c["center"][0] * w, c["center"][1] * h
        gx, gy = c["centroid"][0] * w, c["centroid"][1] * h
        for lw, ec in ((3.2, "black"), (1.6, col)):
            ax.add_patch(Circle((cx, cy), c["radius"] * side, fill=False, lw=lw, ec=ec,
                                ls="--" if c["percent"] >= 50 else "-"))
        ax.plot([cx], [cy], marker="+", ms=12, mew=3.5, color="black")
        ax.plot([cx], [cy], marker="+", ms=11, mew=1.8, color=col)
        ax.plot([gx], [gy], marker="x", ms=8, mew=3.2, color="black")
        ax.plot([gx], [gy], marker="x", ms=7, mew=1.6, color=col)
        ax.annotate(f"{c['name']} {c['percent']:.1f}%", (cx, cy), xytext=(6, -6), textcoords="offset points",
                    fontsize=8.5, color="white", weight="bold",
                    bbox={"boxstyle": "round,pad=0.2", "fc": tuple(col * 0.6), "ec": "black", "lw": 0.6, "alpha": 0.9})
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    scenes = f"\nscenes: {scenes_text(record)}" if record.get("scenes") else ""
    ax.set_title(f"{record['image']}  ({w}x{h})   + circle centre   x centroid{scenes}", fontsize=10)
    ax.set_xticks([0, w / 3, 2 * w / 3, w], ["0", "1/3", "2/3", "1"], fontsize=7)
    ax.set_yticks([0, h / 3, 2 * h / 3, h], ["0", "1/3", "2/3", "1"], fontsize=7)
    ax.grid(True, color="white", lw=0.5, alpha=0.5)

    handles = [Patch(fc=colors[c["id"]], ec="black",
                     label=f"{c['name']}: {c['percent']:.1f}%, {c['position']}, {c['regions']} region"
                           f"{'s' if c['regions'] != 1 else ''}, elong. {c['elongation']:.1f}, r {c['radius']:.2f}")
               for c in record["classes"]]
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.59, 0.94), fontsize=8.5, frameon=False,
               title="classes (record order)", title_fontsize=9.5, alignment="left")
    rel = "\n".join(f"{r['subject']} {r['relation']} {r['object']}" for r in record["relations"]) or "(none)"
    fig.text(0.6, 0.90 - 0.04 * (len(handles) + 1), "relations\n" + rel, fontsize=8.5, va="top", family="monospace")
    prompt = [w for line in to_prompt(record).split("\n") for w in textwrap.wrap(line, 140)]  # the scene line apart
    fig.text(0.01, 0.12, "prompt: " + "\n".join(prompt), fontsize=8.5, va="top", family="monospace")
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


@checked
def main(
    file: Path,
    index: int | None = None,
    image: str | None = None,
    overlay: Path | None = None,
    mask: Path | None = None,
    out: Path | None = None,
    classes: str = "seed10",
    source_ids: bool = False,
    overwrite: bool = False,
) -> dict:
    """Print one composition record as a table with its prompt text; optionally write an overlay PNG.

    Args:
        file: compositions JSON Lines file (from python -m composition.extract).
        index: which record (0-based; negative counts from the end). Default: the first.
        image: the record of this image file name (or stem) instead of --index.
        overlay: the image to draw on; needs --out.
        mask: the mask PNG to blend over the image (group ids, or source ids with --source-ids).
        out: the overlay PNG to write.
        classes: class table name (seed10, aerial10) or YAML path: names and colours.
        source_ids: the mask holds the drone dataset's 24 source ids; group them first.
        overwrite: replace an existing --out file.
    """

    records = read_jsonl(file)
    if not records:
        raise DataError(f"{file}: no records")
    record = pick(records, index, image, str(file))
    print(table_text(record))
    if overlay is None and (out is not None or mask is not None):
        raise ConfigError("--out and --mask need --overlay IMAGE (the picture to draw on)")
    if overlay is not None:
        if out is None:
            raise ConfigError("--overlay needs --out PNG (where to write the picture)")
        check_writable(out, overwrite, "overlay")
        table = load_class_table(classes)
        picture = read_rgb(overlay)
        h, w = picture.shape[:2]
        if (w, h) != (record["width"], record["height"]):
            raise DataError(f"--overlay {overlay} is {w}x{h} but the record of {record['image']!r} in {file} is "
                            f"{record['width']}x{record['height']}; give the image the record was made from")
        m = None
        if mask is not None:
            m = read_mask(mask)
            if m.shape != (h, w):
                raise DataError(f"--mask {mask} is {m.shape[1]}x{m.shape[0]} but --overlay {overlay} is {w}x{h}; "
                                "give the mask of that image")
            m = table.group(m, where=mask) if source_ids else m
            if m.max() >= table.num_classes:
                raise DataError(f"{mask}: ids up to {int(m.max())} but the class table has {table.num_classes}; "
                                "pass --source-ids for masks of drone source ids")
        draw_overlay(record, picture, out, table, m)
        print(f"wrote {out}")
    return record


if __name__ == "__main__":

    run(main, positional=("file",))
