"""Figures of segmentation training and prediction (matplotlib Agg / OpenCV, written as PNG).

- :func:`plot_history`: loss and mIoU against wall-clock training minutes;
- :func:`plot_confusion`: row-normalised confusion matrix with class names (as the seed's figure);
- :func:`plot_samples`: image | truth | prediction rows with a legend;
- :func:`overlay_with_legend`: one image blended with its mask plus a legend strip (class, colour, percent), fast
  enough for batch prediction (OpenCV only).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segcap.atomic import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def plot_history(history: list[dict], path: str | Path, title: str = "segmentation training") -> Path:
    """Two panels: train/val loss, and val (and caption-set) mIoU, against training minutes."""
    plt = _plt()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    minutes = [h["minutes"] for h in history]

    def curve(ax, key, style, label):  # only the epochs that measured ``key`` (evaluation may skip epochs)
        pts = [(h["minutes"], h[key]) for h in history if h.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=label)

    ax1.plot(minutes, [h["train_loss"] for h in history], "o-" if len(history) <= 30 else "-", label="train loss")
    curve(ax1, "val_loss", "s-", "val loss")
    ax1.set_xlabel("wall-clock minutes")
    ax1.set_ylabel("loss")
    ax1.legend()
    ax1.grid(alpha=0.3)
    curve(ax2, "val_miou", "o-", "val mIoU (training sources)")
    curve(ax2, "caption_miou", "s-", "caption-set test mIoU")
    ax2.set_xlabel("wall-clock minutes")
    ax2.set_ylabel("mIoU")
    ax2.set_ylim(0, 1)
    ax2.legend(loc="lower right")
    ax2.grid(alpha=0.3)
    for ax in (ax1, ax2):
        ax.set_xlim(left=0)
    fig.suptitle(f"{title} ({len(history)} epochs)")
    return _save(fig, path)


def plot_confusion(normalised: np.ndarray, names: list[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (rows: truth, columns: prediction) with the class names and values."""
    plt = _plt()
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * n, 0.8 + 0.55 * n))
    im = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    absent = normalised.sum(1) == 0
    ax.set_yticks(range(n), [f"{name} (absent)" if a else name for name, a in zip(names, absent, strict=True)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            v = normalised[i, j]
            if v >= 0.005:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title or "confusion matrix (rows normalised)")
    return _save(fig, path)


def colorize(mask: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """(H, W) ids -> (H, W, 3) uint8 colours; ids beyond the table (e.g. 255 padding) are white."""
    pal = np.full((256, 3), 255, dtype=np.uint8)
    pal[: len(colors)] = colors
    return pal[mask]


def plot_samples(rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], names: list[str], colors: np.ndarray,
                 path: str | Path, title: str = "") -> Path:
    """A grid of (name, image, truth, prediction) rows, with a legend of the classes."""
    plt = _plt()
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for r, (name, image, truth, pred) in enumerate(rows):
        for c, (panel, label) in enumerate(((image, "image"), (colorize(truth, colors), "truth"),
                                            (colorize(pred, colors), "prediction"))):
            ax = axes[r, c]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name}: {label}" if c == 0 else label, fontsize=9)
    handles = [Patch(color=np.asarray(col) / 255, label=n) for n, col in zip(names, colors, strict=True)]
    if any((truth >= len(names)).any() for _, _, truth, _ in rows):  # IGNORE (255): not labelled by the source
        handles.append(Patch(facecolor="white", edgecolor="0.6", label="not labelled (ignored)"))
    fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(title or "image | truth | prediction")
    fig.tight_layout(rect=(0, 0.06 if len(rows) > 1 else 0.12, 1, 0.97))
    return _save(fig, path)


def overlay_with_legend(image: np.ndarray, mask: np.ndarray, names: list[str], colors: np.ndarray,
                        alpha: float = 0.5) -> np.ndarray:
    """The image blended with its coloured mask, and a legend strip on the right: swatch, class name, percent.

    Only classes present in the mask are listed, largest first. Images under 300 px high are enlarged (nearest) so
    that the legend stays readable beside them. Returns (H', W' + legend, 3) uint8 RGB.
    """
    counts = np.bincount(mask.reshape(-1), minlength=len(names))[: len(names)]
    total = mask.size
    if mask.shape[0] < 300:
        k = -(-300 // mask.shape[0])
        image = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
        mask = cv2.resize(mask, None, fx=k, fy=k, interpolation=cv2.INTER_NEAREST)
    h, w = mask.shape
    blend = (image.astype(np.float32) * (1 - alpha) + colorize(mask, colors).astype(np.float32) * alpha)
    blend = blend.clip(0, 255).astype(np.uint8)
    present = [int(i) for i in np.argsort(-counts) if counts[i] > 0]
    scale = max(0.35, min(1.0, h / 600))
    line = max(14, int(26 * scale))
    text_w = max(cv2.getTextSize(f"{names[i]} 100.0%", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for i in present)
    legend_h = max(h, line * (len(present) + 1))
    legend = np.full((legend_h, text_w + line + 16, 3), 255, dtype=np.uint8)
    for k, i in enumerate(present):
        y = 6 + k * line
        cv2.rectangle(legend, (6, y), (6 + line - 6, y + line - 6), tuple(int(c) for c in colors[i]), -1)
        cv2.rectangle(legend, (6, y), (6 + line - 6, y + line - 6), (0, 0, 0), 1)
        pct = 100.0 * counts[i] / total
        cv2.putText(legend, f"{names[i]} {pct:.1f}%", (line + 6, y + line - 9), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), 1, cv2.LINE_AA)
    canvas = np.full((legend_h, w + legend.shape[1], 3), 255, dtype=np.uint8)
    canvas[:h, :w] = blend
    canvas[:, w:] = legend
    return canvas
