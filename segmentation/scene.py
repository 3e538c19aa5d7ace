"""Fit a scene head on a segmenter's encoder: the caption set's categories (UCM's 21 classes, RSICD's 30, Sydney's 7)
from the encoder's pooled features, for the composition records' ``scenes`` (issue 23).

    python -m segmentation.scene --checkpoint runs/segmentation --captions /data/ucm     # into the checkpoint folder
    python -m segmentation.scene --checkpoint runs/segmentation --captions /data/ucm --out runs/scenes
    python -m segmentation.predict --checkpoint runs/segmentation --images /data/ucm/imgs --out runs/masks
        # -> runs/masks/scenes.json beside the masks (the head in the checkpoint folder is found by itself;
        #    --scene-head runs/scenes names another, --scene-head null none)

What it does, in order:

1. Each image of the training, validation and (when the set has one) test split is read as segmentation.predict
   reads it (same decoding, same ``--scale``, same normalisation) and goes through the segmenter's **encoder** only
   (:meth:`segmentation.model.Segmenter.encoder_pools`): every stage averaged over the image, and the RGB means and
   standard deviations. They are cached in ``<out>/scene_features.npz`` (keyed by the checkpoint's model.pt and the
   scale), so a second fit with other options reads no image.
2. The features the head reads (``--strides``: the stages by their stride, 16 and 32 by default; ``--colour``) are
   standardised with the training split's mean and standard deviation.
   ``--encoder-weights`` (imagenet, or a local file) takes them from an encoder of the head's own, frozen at those
   weights (saved with the head), instead of the segmenter's: on UCM-captions the ImageNet encoder a segmenter
   started from gave 0.91 validation accuracy, the same encoder after 5 epochs on 2 LoveDA tiles 0.68.
3. A linear softmax (multinomial logistic regression) is fitted on the training split with full-batch L-BFGS, once
   for each L2 strength of ``--l2``; the one with the best validation accuracy is kept (ties: the lower validation
   log-loss). It is fitted on the training split only, never on the test split, whose accuracy is only reported.
4. ``<out>/scene_head.pt`` (the head's state dict), ``scene_head.json`` (``segcap.scene_head/1``: classes in index
   order, the features, the metrics, what it was trained on, the checkpoint's digest) and ``scene_head.png`` (the
   validation confusion matrix) are written atomically. An existing head is kept unless ``--overwrite``.

The labels are the caption set's categories (:class:`aerialdata.captionset.CaptionDataset`: class files
``txtclasses_*/``, UCM-captions' numbering, or the file name); images whose category reads ``unknown`` are left out.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from aerialdata.captionset import CaptionDataset
from segcap.atomic import atomic_path, check_writable, write_json
from segcap.cli import run
from segcap.errors import ConfigError, DataError
from segcap.options import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, checked
from segcap.progress import Progress
from segcap.workers import WorkerInit
from segmentation.model import (
    SCENE_HEAD_FILES,
    SCENE_HEAD_SCHEMA,
    SceneHead,
    SceneViews,
    dihedral,
    encoder_weights_problems,
    is_imagenet,
    load_segmenter,
    scene_encoder,
    scene_features,
    weights_digest,
)
from segmentation.plots import plot_confusion
from segmentation.predict import ImageFiles, as_list

L2_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)  # L2 strengths tried (on the mean cross-entropy)
CACHE = "scene_features.npz"
CACHE_VERSION = 1  # bump when Segmenter.encoder_pools changes what it computes
FIGURE = "scene_head.png"
UNKNOWN = ("", "unknown")
NEEDS_CATEGORIES = "scene head needs scene categories: class files txtclasses_*/ or category in file names"


@checked
def main(
    checkpoint: Path,
    captions: Path,
    out: Path | None = None,
    split: str = "train",
    val_split: str = "val",
    test_split: str | None = "test",
    images_dir: str | None = None,
    scale: PositiveFloat = 1.0,
    strides: tuple[int, ...] = (16, 32),
    colour: bool = True,
    views: SceneViews = 1,
    encoder_weights: Path | None = None,
    l2: tuple[NonNegativeFloat, ...] = L2_GRID,
    batch_size: PositiveInt = 16,
    workers: NonNegativeInt = 1,
    device: Literal["auto", "cpu", "cuda"] = "auto",
    threads: PositiveInt | None = None,
    cache: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Fit a scene head (caption-set categories from the segmenter's encoder features) and write it beside the model.

    Args:
        checkpoint: segmentation checkpoint folder (model.pt, config.yaml) whose encoder gives the features.
        captions: caption set root (or its JSON) whose categories are the scenes.
        out: folder for scene_head.pt, scene_head.json, scene_head.png and the feature cache; empty: the checkpoint
            folder (then segmentation.predict and pipeline.caption find the head by themselves).
        split: split the head is fitted on.
        val_split: split that chooses the L2 strength (its accuracy and confusion matrix are reported).
        test_split: split whose accuracy is only reported, never used to choose anything; null: none.
        images_dir: folder of the images inside the caption set root; empty: found there.
        scale: resize factor before the network, as segmentation.predict's (1.0: images at the model's ground
            resolution).
        strides: the encoder stages (by stride: 2, 4, 8, 16, 32) averaged into the features.
        colour: append each RGB channel's mean and standard deviation to the features.
        views: 1, 4 or 8 views of each image (the image, its 4 rotations, or those and their mirror images: an
            aerial photo has no up). The head is fitted on every view of each training image, and reads the mean
            features of the views of every image it judges (validation, test, and every image later: each view costs
            the encoder one more pass). On UCM-captions 8 views took test accuracy from 0.886 to 0.914 (validation
            0.914 to 0.957).
        encoder_weights: take the features from an encoder of the head's own with these weights (imagenet: smp's,
            or a local state-dict file, as segmentation.train takes them), saved with the head; empty: the
            checkpoint's encoder.
        l2: L2 strengths tried; the best validation accuracy wins.
        batch_size: images per forward pass.
        workers: DataLoader processes decoding images (0: decode in the main process).
        device: auto, cpu or cuda.
        threads: torch CPU threads; empty: torch's default.
        cache: keep the features in <out>/scene_features.npz and reuse them.
        overwrite: replace an existing scene head in out.
        progress: show progress (a bar on a terminal, one line in a log).
    """
    # ---- options and data, before the model loads
    out = Path(out) if out is not None else Path(checkpoint)
    problems = option_problems(strides, l2, split, val_split, test_split, encoder_weights, views)
    if problems:
        raise ConfigError(problems)
    if not (Path(checkpoint) / "model.pt").is_file():
        raise ConfigError(f"--checkpoint {checkpoint}: no model.pt there; give a segmentation.train output folder")
    for name in (*SCENE_HEAD_FILES, FIGURE):
        check_writable(out / name, overwrite, "scene head")
    sets = {"train": CaptionDataset(captions, split=split, images_dir=images_dir),
            "val": CaptionDataset(captions, split=val_split, images_dir=images_dir)}
    if test_split:
        try:
            sets["test"] = CaptionDataset(captions, split=test_split, images_dir=images_dir)
        except ConfigError:  # no such split in this set: nothing to report
            pass
    classes, left_out = scene_classes(sets["train"], captions, split)

    # ---- features of every image (the cache first)
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    seg = load_segmenter(checkpoint, device=device, scene_head=None)
    digest = weights_digest(Path(checkpoint) / "model.pt")
    spec = {"strides": [int(s) for s in strides], "colour": bool(colour), "pool": "mean", "views": int(views),
            "encoder": seg.config.get("architecture", {}).get("encoder_name", "mobilenet_v2"),
            "own_encoder": bool(encoder_weights), "encoder_weights": str(encoder_weights) if encoder_weights else None}
    own = scene_encoder(spec, encoder_weights) if encoder_weights else None
    source = _feature_source(digest, encoder_weights)
    paths = {it.filename: ds.image_path(it.filename) for ds in sets.values() for it in ds}
    per_view, unreadable, computed = [], [], 0
    for view in range(views):  # each view's pools, its own cache file
        got, bad, n = _features(seg, own, paths, out / _cache_name(view) if cache else None, source, scale,
                                batch_size, workers, progress, view)
        per_view.append(got)
        unreadable = unreadable or bad
        computed += n
    pools = per_view[0]
    feature_seconds = time.perf_counter() - t0

    # ---- data: features and labels per split
    xy = _split_data(sets, per_view, classes, spec, left_out, captions, split)
    x_train = xy["train"][0]

    # ---- fit, one L2 strength at a time; the validation split chooses
    t1 = time.perf_counter()
    head, val_acc, val_nll, chosen, grid = _fit_best(xy, classes, spec, l2)
    head.encoder = None if own is None else own.cpu()  # saved with the head
    fit_seconds = time.perf_counter() - t1

    # ---- metrics
    confusion = _confusion(head, *xy["val"], len(classes))
    per_class = {c: round(float(confusion[i, i] / confusion[i].sum()), 4) if confusion[i].sum() else None
                 for i, c in enumerate(classes)}
    metrics = {"train_accuracy": round(_evaluate(head, *xy["train"])[0], 4), "val_accuracy": round(val_acc, 4),
               "val_nll": round(val_nll, 4), "per_class_val_accuracy": per_class,
               "val_confusion_matrix": confusion.tolist()}
    if "test" in xy:  # reported only; nothing above read it
        metrics["test_accuracy"] = round(_evaluate(head, *xy["test"])[0], 4)
    info = {
        "schema": SCENE_HEAD_SCHEMA,
        "classes": classes,
        "features": {**spec, "dim": int(x_train.shape[1]), "standardised": True, "scale": scale},
        "metrics": metrics,
        "fit": {"model": "linear softmax, L-BFGS, full batch", "l2": chosen, "grid": grid, "chosen_by": val_split},
        "trained_on": {"captions": str(captions), "split": split, "val_split": val_split,
                       "test_split": test_split if "test" in xy else None,
                       "counts": {part: int(len(y)) // (views if part == "train" else 1) for part, (_, y) in xy.items()},
                       "per_class": {c: int((xy["train"][1] == i).sum()) // views for i, c in enumerate(classes)},
                       "left_out": {**left_out, "unreadable": len(unreadable)}},
        "checkpoint": {"folder": str(checkpoint), "weights_digest": digest},
        "seconds": {"features": round(feature_seconds, 1), "fit": round(fit_seconds, 1)},
        "cache": {"file": str(out / CACHE) if cache else None, "images_computed": computed},
    }

    # ---- write
    _write(out, head, info, confusion, f"scene head, {val_split} split: accuracy {val_acc:.3f} "
                                        f"({len(xy['val'][1])} images)")
    test = f", {test_split} {metrics['test_accuracy']:.3f} (reported only)" if "test" in xy else ""
    print(f"scene head: {len(classes)} classes, features {info['features']['dim']} "
          f"(strides {' '.join(map(str, spec['strides']))}{', colour' if colour else ''}"
          f"{f', {views} views' if views > 1 else ''}), l2 {chosen:g}; accuracy "
          f"{split} {metrics['train_accuracy']:.3f}, {val_split} {val_acc:.3f}{test}; features of "
          f"{len(pools)} images in {feature_seconds:.0f} s ({computed} computed); wrote {out / SCENE_HEAD_FILES[0]}",
          file=sys.stderr)
    return info


# ---------------------------------------------------------------------------------------------------- helpers
def option_problems(strides, l2, split: str, val_split: str, test_split: str | None, encoder_weights,
                    views: int = 1) -> list[str]:
    """The problems with :func:`main`'s options that their types do not catch (empty when they are fine), checked
    before any data is read."""
    problems: list[str] = []
    bad = [s for s in strides if s not in (2, 4, 8, 16, 32)]
    if not strides or bad:
        problems.append(f"--strides {' '.join(map(str, strides))}: each must be one of 2, 4, 8, 16, 32 (the encoder's "
                        "stages by stride), at least one")
    if not l2:
        problems.append("--l2 is empty: give one or more strengths >= 0")
    if len({split, val_split, test_split} - {None}) < len([s for s in (split, val_split, test_split) if s]):
        problems.append(f"--split {split}, --val-split {val_split} and --test-split {test_split} must differ")
    problems += [f"--encoder-weights: {p}" for p in encoder_weights_problems(encoder_weights)]
    return problems


def scene_classes(train: CaptionDataset, captions: Path, split: str) -> tuple[list[str], dict]:
    """The scene names (sorted) of the training split, and how many of its images have none; one DataError when
    the split has fewer than 2 categories or most of its images read ``unknown``."""
    cats = [it.category for it in train]
    unknown = sum(c in UNKNOWN for c in cats)
    classes = sorted({c for c in cats if c not in UNKNOWN})
    if len(classes) < 2 or 2 * unknown > len(cats):
        raise DataError(
            f"{NEEDS_CATEGORIES}; {captions} (split {split}) has {len(classes)} categor"
            f"{'y' if len(classes) == 1 else 'ies'} and {unknown} of its {len(cats)} images read 'unknown'. Add a "
            f"folder {train.classes_dir}/ with one <category>.txt a scene, listing its image file names one a line")
    return classes, {"unknown": unknown}


def _feature_source(digest: str, encoder_weights) -> str:
    """What the cached features were computed with: the checkpoint's weights (``digest``), and the head's own
    encoder weights when it has them (imagenet, or a file's digest)."""
    if not encoder_weights:
        return digest
    return f"{digest}+{'imagenet' if is_imagenet(encoder_weights) else weights_digest(encoder_weights)}"


def _split_data(sets: dict, per_view: list[dict], classes: list[str], spec: dict, left_out: dict, captions,
                split: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(features, labels) per split: the training split's rows are every view of every image (views x the images),
    the others' the mean of each image's views, as Segmenter.scenes reads an image. Counts the images each split
    leaves out into ``left_out``; a split with none usable is a DataError."""
    index = {name: i for i, name in enumerate(classes)}
    xy = {}
    for part, ds in sets.items():
        keep = [it for it in ds if it.filename in per_view[0] and it.category in index]
        left_out[f"{part}_other"] = len(ds) - len(keep)  # unreadable, unknown, or a category the training split lacks
        if not keep:
            raise DataError(f"{captions}: no usable image in split {ds.split} ({len(ds)} images: unreadable, or "
                            f"their categories are not among the {len(classes)} of split {split})")
        y = torch.tensor([index[it.category] for it in keep])
        stacked = [{k: np.stack([got[it.filename][k] for it in keep]) for k in got[keep[0].filename]}
                   for got in per_view]
        if part == "train":
            x = np.concatenate([scene_features(p, spec) for p in stacked])
            y = y.repeat(len(stacked))
        else:
            x = scene_features({k: np.mean([p[k] for p in stacked], axis=0) for k in stacked[0]}, spec)
        xy[part] = (torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), y)
    return xy


def _fit_best(xy: dict, classes: list[str], spec: dict, l2) -> tuple[SceneHead, float, float, float, list[dict]]:
    """A head fitted on the training split for each L2 strength; the best on validation accuracy (ties: the lower
    validation log-loss): (head, its accuracy, its log-loss, its strength, every strength's figures)."""
    x_train, y_train = xy["train"]
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    grid, best = [], None
    for strength in l2:
        head = fit_head(x_train, y_train, classes, spec, mean, std, strength)
        acc, nll = _evaluate(head, *xy["val"])
        grid.append({"l2": strength, "val_accuracy": round(acc, 4), "val_nll": round(nll, 4)})
        if best is None or (acc, -nll) > (best[1], -best[2]):
            best = (head, acc, nll, strength)
    return (*best, grid)


def _write(out: Path, head: SceneHead, info: dict, confusion: np.ndarray, title: str) -> None:
    """The head's weights, its JSON and its confusion-matrix figure, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / SCENE_HEAD_FILES[0]) as tmp:
        torch.save(head.state_dict(), tmp)
    write_json(out / SCENE_HEAD_FILES[1], info)
    norm = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    plot_confusion(norm, info["classes"], out / FIGURE, title=title)


def _cache_key(digest: str, scale: float, view: int = 0) -> str:
    key = [CACHE_VERSION, digest, float(scale)] + ([view] if view else [])  # view 0: the key of caches before views
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def _cache_name(view: int) -> str:
    """The feature cache of view ``view`` (:func:`segmentation.model.dihedral`): view 0's is :data:`CACHE`."""
    return CACHE if view == 0 else CACHE.replace(".npz", f".view{view}.npz")


def _features(seg, encoder, paths: dict[str, Path], cache: Path | None, digest: str, scale: float, batch_size: int,
              workers: int, progress: bool, view: int = 0) -> tuple[dict[str, dict[str, np.ndarray]], list[dict], int]:
    """{filename: encoder pools} of every readable image (:meth:`Segmenter.encoder_pools`, with ``encoder`` when
    not None) in its :func:`~segmentation.model.dihedral` view ``view``, from the cache when it holds them for these
    encoder weights (``digest``), scale and view; the unreadable ones reported and listed; how many were computed."""
    key = _cache_key(digest, scale, view)
    pools: dict[str, dict[str, np.ndarray]] = {}
    if cache is not None and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["key"]) == key:
                    names = [str(n) for n in z["filenames"]]
                    arrays = {k: z[k] for k in z.files if k not in ("key", "filenames")}  # each read once
                    pools = {n: {k: v[i] for k, v in arrays.items()} for i, n in enumerate(names)}
        except (OSError, ValueError, KeyError) as e:
            print(f"note: {cache} unreadable ({e.__class__.__name__}); computing the features again", file=sys.stderr)
    todo = [n for n in paths if n not in pools]
    files = [paths[n] for n in todo]
    loader = DataLoader(ImageFiles(files), batch_size=batch_size, num_workers=workers, collate_fn=as_list,
                        prefetch_factor=4 if workers > 0 else None,
                        worker_init_fn=WorkerInit() if workers > 0 else None)
    unreadable = []
    bar = Progress(total=len(files), desc=f"scene features{f', view {view + 1}' if view else ''}", unit="image",
                   enabled=progress)
    for batch in loader:
        good = [(i, im) for i, im, err in batch if err is None]
        for i, _, err in batch:
            if err is not None:
                bar.write(f"skipped: {err}")
                unreadable.append({"file": str(files[i]), "error": err})
        if good:
            got = seg.encoder_pools([dihedral(im, view) for _, im in good], scale=scale, batch_size=batch_size,
                                    encoder=encoder)
            for j, (i, _) in enumerate(good):
                pools[todo[i]] = {k: v[j] for k, v in got.items()}
        bar.update(len(batch))
    bar.close()
    if cache is not None and len(pools) > 0 and todo and len(unreadable) < len(todo):
        names = sorted(pools)
        kinds = list(pools[names[0]])
        cache.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, key=np.array(key), filenames=np.array(names),
                     **{k: np.stack([pools[n][k] for n in names]) for k in kinds})
    return {n: pools[n] for n in paths if n in pools}, unreadable, len(todo) - len(unreadable)


def cached_scenes(head: SceneHead, names: list[str], scale: float) -> dict[str, list[dict]]:
    """{file name: top scenes} of the images whose features the head's own feature caches hold (every view), as
    :meth:`segmentation.model.Segmenter.scenes` would give them, without running the encoder: segmentation.predict
    on the caption set the head was fitted on reads them here. Only caches of the head's checkpoint, encoder, scale
    and views count (their keys); the other images, or all when anything does not match, are left out."""
    feats = head.features
    if float(feats.get("scale", 1.0)) != float(scale):
        return {}
    try:
        source = _feature_source(head.info["checkpoint"]["weights_digest"],
                                 feats.get("encoder_weights") if feats.get("own_encoder") else None)
        per_view = []
        for view in range(int(feats.get("views", 1))):
            with np.load(Path(head.folder) / _cache_name(view), allow_pickle=False) as z:
                if str(z["key"]) != _cache_key(source, scale, view):
                    return {}
                index = {str(n): i for i, n in enumerate(z["filenames"])}
                per_view.append((index, {k: z[k] for k in z.files if k not in ("key", "filenames")}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}
    want = [n for n in names if all(n in index for index, _ in per_view)]
    if not want:
        return {}
    pools = {k: np.mean([arrays[k][[index[n] for n in want]] for index, arrays in per_view], axis=0)
             for k in per_view[0][1]}
    return dict(zip(want, head.top(scene_features(pools, feats)), strict=True))


def fit_head(x: torch.Tensor, y: torch.Tensor, classes: list[str], features: dict, mean: torch.Tensor,
             std: torch.Tensor, l2: float, max_iter: int = 100) -> SceneHead:
    """A :class:`SceneHead` fitted on (N, dim) features ``x`` and labels ``y``: mean cross-entropy plus
    ``l2 / 2`` times the squared weights (not the biases), minimised by full-batch L-BFGS from zero (deterministic)."""
    head = SceneHead(classes, {**features, "dim": int(x.shape[1])}, int(x.shape[1]))
    head.mean.copy_(mean)
    head.std.copy_(std)
    torch.nn.init.zeros_(head.linear.weight)
    torch.nn.init.zeros_(head.linear.bias)
    z = ((x - mean) / std).float()  # (N, dim), standardised once
    opt = torch.optim.LBFGS(head.linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            tolerance_grad=1e-6, tolerance_change=1e-10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(head.linear(z), y) + 0.5 * l2 * head.linear.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return head.eval()


@torch.inference_mode()
def _evaluate(head: SceneHead, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """(accuracy, mean negative log-likelihood) of ``head`` on (x, y)."""
    logits = head(x)
    return float((logits.argmax(1) == y).float().mean()), float(F.cross_entropy(logits, y))


@torch.inference_mode()
def _confusion(head: SceneHead, x: torch.Tensor, y: torch.Tensor, k: int) -> np.ndarray:
    """(k, k) counts: rows the true class, columns the predicted one."""
    pred = head(x).argmax(1)
    return np.bincount((y * k + pred).numpy(), minlength=k * k).reshape(k, k)


if __name__ == "__main__":
    run(main)
