"""Write the synthetic default data: a drone segmentation set and an RSICD-format caption set with exact masks.

    python -m synthetic.generate --out data/synthetic
    python -m synthetic.generate --out /tmp/small --drone-images 20 --caption-images 60 --seed 1 --overwrite
    python -m synthetic.generate --out /tmp/water --categories pond river beach --caption-images 90

Layout written (the real datasets' formats; see DESIGN.md)::

    <out>/drone/original_images/<stem>.jpg           drone scenes, ``drone_scale`` times finer ground resolution
    <out>/drone/label_images_semantic/<stem>.png     uint8 source ids 0..23
    <out>/drone/class_dict_seg.csv                   name,r,g,b (24 rows)
    <out>/drone/segcap_synthetic.json                the synthetic marker: generator, seed, ground resolution
    <out>/rsicd/dataset_rsicd.json                   Karpathy JSON, splits train/val/test (about 80/10/10 per category)
    <out>/rsicd/RSICD_images/<category>_<n>.jpg
    <out>/rsicd/txtclasses_rsicd/<category>.txt
    <out>/rsicd/label_images_semantic/<stem>.png     exact caption-image masks in source ids
    <out>/rsicd/segcap_synthetic.json                the synthetic marker of the caption set

Each caption-set image entry also holds ``"scene"``: the facts its captions were written from (class percentages,
region counts, 3x3 cells, water shape), measured on its mask. Every image has its own random stream derived from
(seed, set, index), so the same seed gives the same bytes. The whole set is written into a temporary folder beside
``out`` and renamed into place at the end: an interrupted run leaves nothing half-written.

The marker ``segcap_synthetic.json`` in each set's root tells readers (and, through a checkpoint's ``trained_on``,
the tools that use a model trained on it) that the set is synthetic, and states its ground resolution ``gsd`` in metres
per pixel: the scene of a caption image covers ``WORLD_M`` = 224 m, so the caption set is 1.0 m per pixel at the
default 224 px (224 / caption_size in general), and the drone set ``1.0 / drone_scale``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from aerialdata.classes import DRONE_CLASSES
from aerialdata.images import write_mask
from aerialdata.labelled import SYNTHETIC_MARKER
from segcap.atomic import atomic_path, check_writable
from segcap.cli import run
from segcap.errors import ConfigError, OutputExistsError
from segcap.options import ImageSide, NonNegativeInt, ResolutionRatio, checked, option_problems
from segcap.progress import Progress
from synthetic.captions import tokens, write_captions
from synthetic.facts import scene_facts
from synthetic.scenes import CATEGORIES, DRONE_MIX, draw_scene

WORLD_M = 224.0  # metres covered by a caption-set image, whatever its size in pixels (about 1 m per pixel at 224)
JPEG_QUALITY = 90
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # train, val, test within each category
DRONE_PALETTE = np.array([rgb for _, rgb in DRONE_CLASSES], dtype=np.uint8)
_SET_CAPTION, _SET_DRONE = 1, 2  # stream ids for the per-image random generators
MARKER = SYNTHETIC_MARKER  # segcap_synthetic.json in the root of each set written: the set is synthetic, its gsd
GENERATOR = "segcap synthetic.generate"
Category = Literal[CATEGORIES]  # a caption-set scene category


def check_options(drone_images: int, caption_images: int, caption_size: int, drone_size, drone_scale: float,
                  categories) -> list[str]:
    """Every problem with the options, as messages (empty when they are fine): each one's type and bounds (:func:`main`'s
    signature), then the rules between them."""
    problems = option_problems(main, {"drone_images": drone_images, "caption_images": caption_images,
                                      "caption_size": caption_size, "drone_size": drone_size,
                                      "drone_scale": drone_scale, "categories": categories}, "synthetic.generate")
    if drone_images == 0 and caption_images == 0:
        problems.append("--drone-images and --caption-images are both 0: nothing to write")
    if len(drone_size) != 2:
        problems.append(f"--drone-size takes two numbers, width and height (got {len(drone_size)}); e.g. --drone-size 480 320")
    if len(set(categories)) != len(categories):
        problems.append("--categories lists a category twice")
    if not categories:
        problems.append(f"--categories is empty; choose from {', '.join(CATEGORIES)}")
    elif isinstance(caption_images, int) and 0 < caption_images < len(set(categories)):
        problems.append(f"--caption-images {caption_images} is fewer than the {len(set(categories))} categories; "
                        "give at least one image per category")
    return problems


def _jpeg(path: Path, rgb: np.ndarray) -> None:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # pragma: no cover - OpenCV failing to encode a valid array is a programming error
        raise RuntimeError(f"JPEG encoding failed for {path}")
    path.write_bytes(buf.tobytes())


def caption_sample(category: str, index: int, seed: int = 0, size: int = 224):
    """One caption-set scene: ``(rgb, source_mask, captions, facts)``; the same arguments give the same result."""
    rng = np.random.default_rng([seed, _SET_CAPTION, index])
    px_per_m = size / WORLD_M
    cv = draw_scene(category, size, size, px_per_m, rng)
    label = cv.label()
    rgb = cv.render(rng, blur=0.5 * px_per_m)
    facts = scene_facts(label, category, px_per_m)
    return rgb, label, write_captions(facts, rng), facts


def drone_sample(index: int, seed: int = 0, size=(480, 320), scale: float = 4.0, categories=CATEGORIES):
    """One drone-set scene: ``(rgb, source_mask, category)`` at ``scale`` times the caption set's ground resolution."""
    rng = np.random.default_rng([seed, _SET_DRONE, index])
    cats = [c for c in DRONE_MIX if c in categories]
    weights = np.array([DRONE_MIX[c] for c in cats], np.float64)
    category = cats[int(rng.choice(len(cats), p=weights / weights.sum()))]
    px_per_m = scale * 224 / WORLD_M
    cv = draw_scene(category, size[0], size[1], px_per_m, rng, extras=True)
    return cv.render(rng, blur=0.6), cv.label(), category


def marker(kind: str, images: int, seed: int, gsd: float, **settings) -> dict:
    """The synthetic marker of one set (``kind`` drone or rsicd): what wrote it, with which seed and settings, and its
    ground resolution ``gsd`` in metres per pixel. Deterministic: no time or path in it, so the same seed gives the
    same bytes."""
    return {"generator": GENERATOR, "set": kind, "seed": seed, "gsd": gsd, "images": images,
            "world_metres": WORLD_M, **settings}


def _write_marker(folder: Path, content: dict) -> None:
    (folder / MARKER).write_text(json.dumps(content) + "\n", encoding="utf-8")


def _caption_plan(n: int, categories, seed: int) -> list[tuple[str, int, str]]:
    """(category, number within it, split) for every caption image: categories as even as possible, ~80/10/10."""
    k = len(categories)
    plan = []
    for ci, cat in enumerate(categories):
        m = n // k + (1 if ci < n % k else 0)
        n_val = int(round(m * SPLIT_FRACTIONS[1]))
        n_test = int(round(m * SPLIT_FRACTIONS[2]))
        if m >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        splits = ["train"] * (m - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
        order = np.random.default_rng([seed, 3, ci]).permutation(m)
        plan += [(cat, j + 1, splits[order[j]]) for j in range(m)]
    return plan


def generate(out: str | Path, seed: int = 0, drone_images: int = 300, caption_images: int = 1000,
             caption_size: int = 224, drone_size=(480, 320), drone_scale: float = 4.0, categories=None,
             overwrite: bool = False, progress: bool = True) -> dict:
    """Write both synthetic sets under ``out`` (see module docstring) and return a summary dict.

    Raises :class:`ConfigError` listing every bad option, :class:`OutputExistsError` if ``out`` holds files and
    ``overwrite`` is false.
    """
    out = Path(out)
    categories = list(categories) if categories else list(CATEGORIES)
    drone_size = tuple(int(v) for v in drone_size)
    problems = check_options(drone_images, caption_images, caption_size, drone_size, drone_scale, categories)
    if problems:
        raise ConfigError(problems)
    if out.is_file():
        raise ConfigError(f"--out {out} is a file; give a folder path (it will hold drone/ and rsicd/)")
    check_writable(out, overwrite, "synthetic data folder", folder=True)
    if out.exists() and not overwrite and any(out.iterdir()):
        raise OutputExistsError(out, "synthetic data folder")
    plan = _caption_plan(caption_images, categories, seed)
    bar = Progress(total=drone_images + caption_images, desc="synthetic", unit="image", enabled=progress)
    with atomic_path(out) as tmp:  # the old folder, if any, is swapped out only after everything is written
        # ---- drone segmentation set
        if drone_images:
            d = tmp / "drone"
            (d / "original_images").mkdir(parents=True)
            (d / "label_images_semantic").mkdir()
            (d / "class_dict_seg.csv").write_text(
                "name,r,g,b\n" + "".join(f"{n},{r},{g},{b}\n" for n, (r, g, b) in DRONE_CLASSES), encoding="utf-8")
            _write_marker(d, marker("drone", drone_images, seed, 1.0 / drone_scale, image_size=list(drone_size),
                                    drone_scale=drone_scale, categories=categories))
            width = len(str(drone_images))
            for i in range(drone_images):
                rgb, label, _ = drone_sample(i, seed, drone_size, drone_scale, categories)
                stem = f"{i:0{max(width, 3)}d}"
                _jpeg(d / "original_images" / f"{stem}.jpg", rgb)
                write_mask(d / "label_images_semantic" / f"{stem}.png", label, DRONE_PALETTE)
                bar.update()
        # ---- caption set
        if caption_images:
            r = tmp / "rsicd"
            for sub in ("RSICD_images", "txtclasses_rsicd", "label_images_semantic"):
                (r / sub).mkdir(parents=True)
            _write_marker(r, marker("rsicd", caption_images, seed, WORLD_M / caption_size, image_size=caption_size,
                                    drone_scale=drone_scale, categories=categories))
            images, by_cat = [], {c: [] for c in categories}
            sentid = 0
            for imgid, (cat, j, split) in enumerate(plan):
                fn = f"{cat}_{j}.jpg"
                rgb, label, caps, facts = caption_sample(cat, imgid, seed, caption_size)
                _jpeg(r / "RSICD_images" / fn, rgb)
                write_mask(r / "label_images_semantic" / f"{cat}_{j}.png", label, DRONE_PALETTE)
                sents = [{"raw": c, "tokens": tokens(c), "imgid": imgid, "sentid": sentid + k} for k, c in enumerate(caps)]
                images.append({"filename": fn, "imgid": imgid, "split": split, "sentences": sents,
                               "sentids": [s["sentid"] for s in sents], "scene": facts})
                sentid += len(sents)
                by_cat[cat].append(fn)
                bar.update()
            for cat, names in by_cat.items():
                (r / "txtclasses_rsicd" / f"{cat}.txt").write_text("".join(f"{n}\n" for n in names), encoding="utf-8")
            (r / "dataset_rsicd.json").write_text(
                json.dumps({"images": images, "dataset": "synthetic-rsicd",
                            "generator": {"name": "synthetic.generate", "seed": seed, "image_size": caption_size,
                                          "metres_per_pixel": WORLD_M / caption_size, "categories": categories,
                                          "drone_scale": drone_scale}},
                           separators=(",", ":")) + "\n",
                encoding="utf-8")
    bar.close()
    splits = {s: sum(1 for _, _, sp in plan if sp == s) for s in ("train", "val", "test")}
    return {"out": str(out), "seed": seed, "drone_images": drone_images, "caption_images": caption_images,
            "categories": categories, "splits": splits}


@checked
def main(
    out: Path = Path("data/synthetic"),
    seed: int = 0,
    drone_images: NonNegativeInt = 300,
    caption_images: NonNegativeInt = 1000,
    caption_size: ImageSide = 224,
    drone_size: tuple[ImageSide, ...] = (480, 320),
    drone_scale: ResolutionRatio = 4.0,
    categories: list[Category] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write procedural aerial scenes with exact masks and captions, in the drone dataset's and RSICD's formats.

    Args:
        out: folder to create (holds drone/ and rsicd/).
        seed: random seed; the same seed writes the same bytes.
        drone_images: number of drone segmentation images (0 for none).
        caption_images: number of caption-set images, spread evenly over the categories (0 for none).
        caption_size: side of the square caption-set images in pixels, 64 or more (RSICD: 224); the scene always
            covers 224 m.
        drone_size: width and height of the drone images in pixels (the real ones are 6000x4000, 3:2).
        drone_scale: how many times finer the drone set's ground resolution is than the caption set's (objects that
            many times larger in pixels; 1: the same): the scale gap between the two real datasets, at most 64.
        categories: caption-set categories to include (default: all); the drone set draws from the same ones.
        overwrite: replace an existing non-empty output folder.
        progress: show progress (a bar on a terminal, one line in a log).
    """
    summary = generate(out, seed, drone_images, caption_images, caption_size, drone_size, drone_scale, categories,
                       overwrite, progress)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":

    run(main)
