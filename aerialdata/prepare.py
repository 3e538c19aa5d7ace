"""Lay out a downloaded caption set the way segcap reads it with no options: the images under the names the caption
JSON gives them, the JSON, and class lists so that categories are explicit.

    # UCM-captions from the UC Merced class folders (UCMerced_LandUse.zip) and the caption JSON
    python -m aerialdata.prepare ucm --images /data/UCMerced_LandUse/Images --captions /data/dataset.json \\
        --out data/ucm

    # UCM-captions already in its published layout (imgs/N.tif): class lists written, images and JSON linked
    python -m aerialdata.prepare ucm --images /data/UCM_captions/imgs --captions /data/UCM_captions/dataset.json \\
        --out data/ucm

    # Sydney-captions (its N -> class mapping is not published with the captions: give class lists if you have them)
    python -m aerialdata.prepare sydney --images /data/Sydney_captions/imgs \\
        --captions /data/Sydney_captions/dataset.json --out data/sydney [--classes /data/sydney_classes]

Writes, in ``--out``::

    imgs/<filename>                  every image the caption JSON names (UCM: 1.tif..2100.tif)
    dataset_<set>.json               a byte copy of --captions
    txtclasses_<set>/<class>.txt     one filename a line: UCM from N (classes in alphabetical order, 100 each,
                                     see aerialdata.captionset.ucm_source); Sydney: a copy of --classes, if given

so that ``CaptionDataset("data/ucm")`` (and every entry point's ``--references data/ucm``) finds the JSON, the images
and the categories by itself. For UCM, ``--images`` is either the class-folder layout of UC Merced Land Use
(``UCMerced_LandUse/Images/<class>/<class>NN.tif``, or its parent) or a folder of ``N.tif`` already.

Images are hard links by default: no extra space, but they share their content with the originals (editing one
edits both); where a hard link is impossible (another file system, a file of another user) the image is copied.
``--link symlink`` links by absolute path, ``--link copy`` always copies.

Everything is checked before anything is written: the options together, every image the captions name (one message
with the count and the first missing ones), and the output folder (an existing, non-empty one is kept unless
``--overwrite``). The folder is written beside its final place and renamed when complete, so a failed or killed run
leaves nothing in ``--out``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Literal

from aerialdata.captionset import (
    IMAGE_DIRS,
    KNOWN_GSD,
    UCM_CLASSES,
    UCM_COUNT,
    CaptionDataset,
    dataset_key,
    numbered,
    ucm_source,
)
from segcap.atomic import atomic_path, check_writable, folder_lock
from segcap.cli import run
from segcap.errors import ConfigError, DataError, DatasetNotFoundError, OutputExistsError
from segcap.options import checked
from segcap.progress import Progress

IMAGES_OUT = "imgs"  # the published layout of UCM- and Sydney-captions; first folder CaptionDataset looks for
SHOWN = 5  # missing or unknown names shown in a message


def find_ucm_images(images: Path) -> tuple[Path, str]:
    """The folder that holds UCM's photos and its layout: ``"classes"`` (``<class>/<class>NN.tif``) or ``"numbered"``
    (``N.tif``). ``images`` may be ``UCMerced_LandUse/Images``, its parent, or the folder above that."""
    for folder in (images, images / "Images", images / "UCMerced_LandUse" / "Images"):
        if any((folder / c).is_dir() for c in UCM_CLASSES):
            return folder, "classes"
    folder = _numbered_folder(images)
    if folder is not None:
        return folder, "numbered"
    raise DatasetNotFoundError(
        f"--images {images}: neither the UC Merced class folders (<class>/<class>NN.tif, e.g. "
        "agricultural/agricultural00.tif) nor numbered images (1.tif, 2.tif...) found there; pass "
        "UCMerced_LandUse/Images (or its parent) of UCMerced_LandUse.zip, or the folder of N.tif of UCM-captions")


def _numbered_folder(images: Path) -> Path | None:
    """``images`` or one of its :data:`~aerialdata.captionset.IMAGE_DIRS` that holds numbered images (``N.tif``)."""
    for folder in (images, *(images / d for d in IMAGE_DIRS)):
        if folder.is_dir() and any(numbered(p.name) is not None for p in folder.iterdir()):
            return folder
    return None


def ucm_plan(ds: CaptionDataset, folder: Path, layout: str) -> tuple[list[tuple[Path, str]], dict[str, list[str]]]:
    """(source photo, output filename) for every image of ``ds``, and class -> filenames; a DataError for names that
    are not UCM-captions' ``N.tif``, 1 <= N <= 2100."""
    bad = [it.filename for it in ds if not 1 <= (numbered(it.filename) or 0) <= UCM_COUNT]
    if bad:
        raise DataError(f"{ds.json_path}: {len(bad)} image name(s) are not UCM-captions' N.tif with N in "
                        f"1..{UCM_COUNT}: {_shown(bad)}; is this the UCM-captions JSON?")
    plan, classes = [], {}
    for it in ds:
        cls, photo = ucm_source(numbered(it.filename))  # type: ignore[arg-type]  (checked above)
        src = folder / cls / f"{cls}{photo:02d}.tif" if layout == "classes" else folder / it.filename
        plan.append((src, it.filename))
        classes.setdefault(cls, []).append(it.filename)
    return plan, classes


def read_class_lists(folder: Path, ds: CaptionDataset) -> dict[str, list[str]]:
    """``<class>.txt`` lists (one filename a line) of ``folder``; a DataError for names the captions do not have."""
    lists = {txt.stem: [ln.strip() for ln in txt.read_text(encoding="utf-8").splitlines() if ln.strip()]
             for txt in sorted(folder.glob("*.txt"))}
    if not lists:
        raise DataError(f"--classes {folder} holds no <class>.txt lists (one image filename a line)")
    unknown = [f"{fn} ({name}.txt)" for name, fns in lists.items() for fn in fns if fn not in ds]
    if unknown:
        raise DataError(f"--classes {folder}: {len(unknown)} listed image(s) are not in {ds.json_path}: "
                        f"{_shown(unknown)}; the lists must use the caption file's names (1.tif, 2.tif...)")
    return lists


def place(src: Path, dst: Path, link: str) -> str:
    """Put ``src`` at ``dst`` as ``link`` asks; returns what was made: hardlink, symlink or copy (a hard link that the
    file system refuses falls back to a copy)."""
    if link == "symlink":
        os.symlink(src.resolve(), dst)
        return "symlink"
    if link == "hardlink":
        try:
            os.link(src, dst)
            return "hardlink"
        except OSError:  # another file system, a file of another user (protected_hardlinks), no hard links at all
            pass
    shutil.copy2(src, dst)
    return "copy"


def _shown(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


@checked
def main(
    dataset: Literal["ucm", "sydney"],
    images: Path,
    captions: Path,
    out: Path,
    classes: Path | None = None,
    link: Literal["hardlink", "symlink", "copy"] = "hardlink",
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Lay out a downloaded caption set as segcap reads it: <out>/imgs/, <out>/dataset_<set>.json, class lists.

    Args:
        dataset: which set: ucm (UCM-captions) or sydney (Sydney-captions).
        images: ucm: UCMerced_LandUse/Images (class folders) or its parent, or a folder of N.tif; sydney: the folder
            of N.tif (imgs/).
        captions: the caption JSON (Karpathy format: dataset.json, dataset_ucm.json...).
        out: the folder to write.
        classes: sydney only: a folder of <class>.txt lists (one filename a line), copied to txtclasses_sydney/.
        link: how the images are placed: hardlink (a copy where impossible), symlink (absolute) or copy.
        overwrite: replace an existing, non-empty --out.
        progress: show a progress bar (one summary line when stderr is not a terminal).
    """
    # 1. the options, every problem together
    images, captions, out = Path(images), Path(captions), Path(out)
    problems = []
    if not images.is_dir():
        problems.append(f"--images {images} is not a folder; give the folder of the photos")
    if not captions.is_file():
        problems.append(f"--captions {captions} is not a file; give the caption JSON (dataset.json)")
    if classes is not None and dataset == "ucm":
        problems.append("--classes is for sydney: UCM's classes follow from N.tif (written to txtclasses_ucm/)")
    elif classes is not None and not Path(classes).is_dir():
        problems.append(f"--classes {classes} is not a folder; give a folder of <class>.txt lists")
    if out.exists() or out.is_symlink():
        for opt, path in (("--images", images), ("--captions", captions), ("--classes", classes)):
            if path is not None and Path(path).exists() and _inside(Path(path), out):
                problems.append(f"{opt} {path} is inside --out {out}; write to another folder")
    if problems:
        raise ConfigError(problems)

    # 2. the inputs: the captions, then every image they name
    ds = CaptionDataset(captions)
    said = dataset_key(ds.dataset_name)
    if said in KNOWN_GSD and said != dataset:
        raise ConfigError(f"{captions} is a {ds.dataset_name!r} caption file (its \"dataset\" key), not {dataset}; "
                          f"run `python -m aerialdata.prepare {said} ...`")
    if dataset == "ucm":
        folder, layout = find_ucm_images(images)
        plan, class_lists = ucm_plan(ds, folder, layout)
    else:
        folder, layout = _numbered_folder(images) or images, "numbered"
        plan = [(folder / it.filename, it.filename) for it in ds]
        class_lists = read_class_lists(Path(classes), ds) if classes is not None else {}
    missing = [f"{fn} ({src.relative_to(folder)})" if src.name != fn else fn for src, fn in plan if not src.is_file()]
    if missing:
        raise DatasetNotFoundError(f"{len(missing)} of the {len(plan)} images of {captions} are missing in {folder}: "
                                   f"{_shown(missing)}; pass --images with the folder that holds them all")

    # 3. the output: checked before the work
    check_writable(out, overwrite, "output folder", folder=True)
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise OutputExistsError(out, "output folder")

    # 4. write beside --out, rename when complete
    json_name, classes_dir = f"dataset_{dataset}.json", f"txtclasses_{dataset}"
    made: dict[str, int] = {}
    with folder_lock(out), atomic_path(out) as tmp:
        (tmp / IMAGES_OUT).mkdir(parents=True)
        for src, fn in Progress(plan, desc=f"{dataset} images", unit="image", enabled=progress):
            how = place(src, tmp / IMAGES_OUT / fn, link)
            made[how] = made.get(how, 0) + 1
        shutil.copyfile(captions, tmp / json_name)
        if class_lists:
            (tmp / classes_dir).mkdir()
            for name, fns in sorted(class_lists.items()):
                (tmp / classes_dir / f"{name}.txt").write_text("".join(f"{fn}\n" for fn in fns), encoding="utf-8")

    words = {"hardlink": ("hard link", "hard links"), "symlink": ("symbolic link", "symbolic links"),
             "copy": ("copy", "copies")}
    kinds = ", ".join(f"{n} {words[how][n != 1]}" for how, n in sorted(made.items()))
    summary = {"out": str(out), "images": len(plan), "placed": made, "json": json_name,
               "classes": len(class_lists), "layout": layout}
    lists = f"{classes_dir}/ ({len(class_lists)} classes)" if class_lists else "no class lists (categories unknown)"
    print(f"wrote {out}: {IMAGES_OUT}/ ({len(plan)} images: {kinds}), {json_name}, {lists}")
    return summary


if __name__ == "__main__":
    run(main, positional=("dataset",))
