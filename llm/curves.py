"""Loss curves of a fine-tuning run (the seed's figure 6): train and eval loss against step and epoch, CSV + PNG."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from segcap.atomic import atomic_path, write_text


def loss_rows(log_history: Sequence[dict]) -> list[dict]:
    """One row per logged loss from a Trainer ``log_history``: step, epoch, split (train/eval), loss."""
    rows = []
    for entry in log_history:
        for key, split in (("loss", "train"), ("eval_loss", "eval")):
            if key in entry:
                rows.append(
                    {"step": int(entry.get("step", 0)), "epoch": round(float(entry.get("epoch", 0.0)), 4),
                     "split": split, "loss": float(entry[key])}
                )
    return rows


def write_loss_csv(path: str | Path, rows: Sequence[dict]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["step", "epoch", "split", "loss"], lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return write_text(path, buf.getvalue())


def plot_loss(path: str | Path, rows: Sequence[dict], title: str = "caption LM fine-tuning") -> Path:
    """Train loss (line) and eval loss (markers, one per epoch) against the step; epochs on the top axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r["split"] == "train"]
    ev = [r for r in rows if r["split"] == "eval"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], color="tab:blue", lw=1.4, label="train loss")
    if ev:
        ax.plot([r["step"] for r in ev], [r["loss"] for r in ev], color="tab:orange", marker="o", lw=1.4,
                label="eval loss (val split)")
    pts = [r for r in rows if r["step"] > 0 and r["epoch"] > 0]
    if pts:
        per_epoch = pts[-1]["step"] / pts[-1]["epoch"]  # steps per epoch
        top = ax.secondary_xaxis("top", functions=(lambda s: s / per_epoch, lambda e: e * per_epoch))
        top.set_xlabel("epoch")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy on caption tokens")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if train or ev:
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
