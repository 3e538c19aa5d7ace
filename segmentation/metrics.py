"""Segmentation metrics from one confusion matrix: pixel accuracy, IoU per class, mean IoU, normalised matrix.

    cm = ConfusionMatrix(num_classes=10)
    cm.update(pred, target)          # numpy arrays or torch tensors of ids; target == ignore_index is skipped
    cm.pixel_accuracy, cm.iou(), cm.miou
    cm.summary(table.names)          # the dict written to metrics.json

Rows are the truth, columns the prediction (as scikit-learn's ``confusion_matrix``). A class absent from both the
truth and the prediction has no IoU (NaN, ``null`` in JSON) and is left out of the mean; a class present in either
counts, even at 0. Training's evaluation (``segmentation.train.evaluate``) counts with this class and sums the
matrices of its processes; the tests compare both with scikit-learn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np
import torch

IGNORE_INDEX = 255  # mask value of padding: counted nowhere


class ConfusionMatrix:
    """Accumulates a (num_classes, num_classes) int64 confusion matrix with bincount."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred, target) -> ConfusionMatrix:
        """Add the pixels of ``pred`` vs ``target`` (same shape, integer ids; ``target == ignore_index`` skipped)."""
        n = self.num_classes
        if isinstance(pred, torch.Tensor) or isinstance(target, torch.Tensor):
            p = torch.as_tensor(pred).reshape(-1).long()
            t = torch.as_tensor(target).reshape(-1).long().to(p.device)
            if p.shape != t.shape:
                raise ValueError(f"prediction has {p.numel()} pixels but target has {t.numel()}")
            keep = t != self.ignore_index
            p, t = p[keep], t[keep]
            if t.numel() and (t.max() >= n or p.max() >= n or t.min() < 0 or p.min() < 0):
                raise ValueError(f"ids must be in 0..{n - 1}")
            counts = torch.bincount(t * n + p, minlength=n * n).cpu().numpy()
        else:
            p = np.asarray(pred).reshape(-1).astype(np.int64)
            t = np.asarray(target).reshape(-1).astype(np.int64)
            if p.shape != t.shape:
                raise ValueError(f"prediction has {p.size} pixels but target has {t.size}")
            keep = t != self.ignore_index
            p, t = p[keep], t[keep]
            if t.size and (t.max() >= n or p.max() >= n or t.min() < 0 or p.min() < 0):
                raise ValueError(f"ids must be in 0..{n - 1}")
            counts = np.bincount(t * n + p, minlength=n * n)
        self.matrix += counts.reshape(n, n)
        return self

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.matrix += other.matrix
        return self

    # ---------------------------------------------------------------- figures
    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    @property
    def pixel_accuracy(self) -> float:
        return float(np.trace(self.matrix) / self.total) if self.total else float("nan")

    def iou(self) -> np.ndarray:
        """(num_classes,) IoU = TP / (TP + FP + FN); NaN for a class absent from both truth and prediction."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    @property
    def miou(self) -> float:
        """Mean IoU over the classes present in the truth or the prediction."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def normalised(self) -> np.ndarray:
        """Rows divided by their sum (recall per true class); rows of absent classes are zeros."""
        rows = self.matrix.sum(1, keepdims=True)
        return np.divide(self.matrix, rows, out=np.zeros(self.matrix.shape, dtype=np.float64), where=rows > 0)

    def summary(self, names: list[str]) -> dict:
        """Figures for metrics.json: pixel accuracy, mIoU, per-class IoU by name, the matrices."""
        iou = self.iou()
        return {
            "pixel_accuracy": _num(self.pixel_accuracy),
            "miou": _num(self.miou),
            "per_class_iou": {name: _num(v) for name, v in zip(names, iou, strict=True)},
            "classes_in_mean": [name for name, v in zip(names, iou, strict=True) if np.isfinite(v)],
            "note": "IoU is null for a class absent from both truth and prediction; the mean leaves those out",
            "pixels": self.total,
            "confusion_matrix": self.matrix.tolist(),
            "confusion_matrix_normalised": np.round(self.normalised(), 4).tolist(),
        }


def block_share(masks: Iterable[np.ndarray], num_classes: int) -> np.ndarray:
    """(num_classes,) share of each class's pixels that lie in a 2x2 block of that class; NaN for an absent class.

    A class most of whose pixels lie in no such block is mostly one pixel wide at this scale (a fence, a person seen
    from far): a segmenter cannot draw it, and its IoU stays near 0 however long it trains. A 2-pixel-wide car still
    counts. Computed as the opening by a 2x2 square (erode to the blocks' top-left corners, dilate back); beyond the
    image border a class continues; ``ignore_index`` pixels are no class.
    """
    total = np.zeros(num_classes, np.int64)
    inner = np.zeros(num_classes, np.int64)
    kernel = np.ones((2, 2), np.uint8)
    for m in masks:
        m = np.asarray(m)
        for c in np.unique(m):
            if c >= num_classes:
                continue
            b = (m == c).view(np.uint8)
            total[c] += int(b.sum())
            starts = cv2.erode(b, kernel, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)  # top-left of full blocks
            inner[c] += int(cv2.dilate(starts, kernel, anchor=(1, 1), borderType=cv2.BORDER_CONSTANT,
                                       borderValue=0).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inner / np.maximum(total, 1), np.nan)


def _num(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 5)
