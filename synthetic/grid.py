"""A picture of the synthetic data: one caption-set sample per category beside its coloured mask and a caption,
plus drone-set samples at their finer ground resolution.

    python -m synthetic.grid --out docs/synthetic_grid.png --overwrite
    python -m synthetic.grid --data data/synthetic --out runs/grid.png --classes aerial10

Without ``--data`` the samples are generated in memory (same seed, same picture); with it they are read from a
written set (the first image of each category, and the first drone images).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from aerialdata.captionset import CaptionDataset  # noqa: E402
from aerialdata.classes import load_class_table  # noqa: E402
from aerialdata.images import list_images, read_mask, read_rgb  # noqa: E402
from segcap.atomic import atomic_path, check_writable  # noqa: E402
from segcap.cli import run
from segcap.errors import DatasetNotFoundError  # noqa: E402
from segcap.options import NonNegativeInt, checked  # noqa: E402
from synthetic.generate import caption_sample, drone_sample  # noqa: E402
from synthetic.scenes import CATEGORIES  # noqa: E402


def _samples(data: Path | None, seed: int, drone: int):
    """([(category, rgb, mask, caption)], [(rgb, mask)]) from a written set or generated in memory."""
    if data is None:
        caps = []
        for i, cat in enumerate(CATEGORIES):
            rgb, mask, captions, _ = caption_sample(cat, i, seed)
            caps.append((cat, rgb, mask, captions[0]))
        drones = [drone_sample(i, seed)[:2] for i in range(drone)]
        return caps, drones
    ds = CaptionDataset(data / "rsicd")
    first: dict[str, object] = {}
    for it in ds:
        first.setdefault(it.category, it)
    caps = [(cat, read_rgb(ds.image_path(it.filename)), read_mask(ds.mask_path(it.filename)), it.sentences[0])
            for cat, it in sorted(first.items())]
    folder = data / "drone" / "original_images"
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder} not found; write the set with `python -m synthetic.generate --out {data}`")
    drones = [(read_rgb(p), read_mask(data / "drone" / "label_images_semantic" / f"{p.stem}.png"))
              for p in list_images(folder)[:drone]]
    return caps, drones


def make_grid(out: Path, data: Path | None = None, seed: int = 0, classes: str = "seed10", drone: int = 2) -> Path:
    """Draw the grid PNG (see module docstring) and return its path."""
    table = load_class_table(classes)
    caps, drones = _samples(data, seed, drone)
    cols = 4
    rows = -(-len(caps) // cols)
    drone_rows = -(-len(drones) // 2)
    fig = plt.figure(figsize=(4.4 * cols, 3.0 * rows + 3.0 * drone_rows + 1.2), dpi=110)
    gs = fig.add_gridspec(rows + drone_rows, cols * 2, height_ratios=[3.0] * rows + [3.0] * drone_rows,
                          hspace=0.38, wspace=0.04, top=0.95, bottom=0.08, left=0.01, right=0.99)
    for k, (cat, rgb, mask, caption) in enumerate(caps):
        r, c = divmod(k, cols)
        ax_i, ax_m = fig.add_subplot(gs[r, 2 * c]), fig.add_subplot(gs[r, 2 * c + 1])
        ax_i.imshow(rgb)
        ax_m.imshow(table.colors[table.group(mask)])
        ax_i.set_title(cat, fontsize=11, fontweight="bold", loc="left")
        ax_i.text(0, -0.04, "\n".join(textwrap.wrap(caption.replace(" .", "\u00a0."), 44)), transform=ax_i.transAxes, va="top", ha="left",
                  fontsize=8.5)
        for ax in (ax_i, ax_m):
            ax.set_xticks([]), ax.set_yticks([])
    for k, (rgb, mask) in enumerate(drones):
        r, c = divmod(k, 2)
        ax_i = fig.add_subplot(gs[rows + r, 4 * c : 4 * c + 2])
        ax_m = fig.add_subplot(gs[rows + r, 4 * c + 2 : 4 * c + 4])
        ax_i.imshow(rgb)
        ax_m.imshow(table.colors[table.group(mask)])
        ax_i.set_title(f"drone set {rgb.shape[1]}x{rgb.shape[0]} (finer ground resolution)", fontsize=10, loc="left")
        for ax in (ax_i, ax_m):
            ax.set_xticks([]), ax.set_yticks([])
    handles = [Patch(color=np.asarray(col) / 255, label=name) for name, col in zip(table.names, table.colors, strict=True)]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=9, frameon=False, bbox_to_anchor=(0.5, 0.0),
               title=f"mask colours: {table.name} groups", title_fontsize=9)
    fig.suptitle("segcap synthetic data: caption-set scenes (224x224), exact masks and one of five captions",
                 fontsize=13, y=0.985)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return out


@checked
def main(out: Path = Path("docs/synthetic_grid.png"), data: Path | None = None, seed: int = 0,
         classes: str = "seed10", drone: NonNegativeInt = 2, overwrite: bool = False) -> Path:
    """Draw sample synthetic images beside their coloured masks and captions.

    Args:
        out: PNG to write.
        data: a set written by synthetic.generate to read samples from; default: generate them in memory.
        seed: random seed when generating in memory.
        classes: class table whose group colours paint the masks (seed10, aerial10 or a YAML path).
        drone: number of drone-set samples to show.
        overwrite: replace an existing PNG.
    """
    check_writable(out, overwrite, "grid image")
    path = make_grid(out, data, seed, classes, drone)
    print(path)
    return path


if __name__ == "__main__":

    run(main)
