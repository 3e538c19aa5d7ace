"""Reader for caption sets in the Karpathy-split JSON format (RSICD, UCM-captions, Sydney-captions, Flickr8k/30k).

On disk (names are defaults; every one can be changed)::

    <root>/dataset_rsicd.json              {"images": [{"filename", "imgid", "split", "sentences": [{"raw", ...}]}]}
    <root>/RSICD_images/<filename>         the images
    <root>/txtclasses_rsicd/<category>.txt optional: one filename a line
    <root>/label_images_semantic/<stem>.png optional: exact masks of drone source ids (written by synthetic.generate)

The category of an image comes from ``txtclasses_rsicd`` when present, else from its filename
(``denseresidential_12.jpg`` -> ``denseresidential``).

**Layouts found without options.** When ``json_name`` / ``images_dir`` are not given, the reader looks at the root:
the JSON is ``dataset_rsicd.json`` if present, else the single ``dataset*.json`` there (several: a DataError asking
for ``json_name``); the images folder is the first existing of :data:`IMAGE_DIRS`; the class lists are
``txtclasses_<name>`` matching the JSON (``dataset_ucm.json`` -> ``txtclasses_ucm``), else ``txtclasses_rsicd``, else
the single ``txtclasses*`` folder. So each set reads in the layout it is downloaded in::

    RSICD            <root>/dataset_rsicd.json   <root>/RSICD_images/   [<root>/txtclasses_rsicd/]
    UCM-captions     <root>/dataset.json         <root>/imgs/N.tif      N = 1..2100, 256x256, 0.3 m/px
    Sydney-captions  <root>/dataset.json         <root>/imgs/N.tif      N = 1..613, 500x500, 0.5 m/px
    (copies)         <root>/dataset_ucm.json     <root>/UCM_images/ or <root>/images/

**Blank captions.** A caption with no letter or digit (``""``, ``"  "``, ``"."``) is *blank* (:func:`is_blank`): it
teaches a model to write nothing. The reader keeps them (scoring refuses them where it meets them); the training entry
points screen each split with :func:`screen_blank_captions`: blank captions are left out with one note (how many,
the first few), an image left without a caption is left out with them, and a split with no caption left is refused
(one message, exit code 2, before any work).

**UCM-captions categories.** Its filenames (``N.tif``) say nothing of the class; when the JSON's ``"dataset"`` is
``ucm`` (any case, or ``ucm-captions``) the category of ``N.tif``, 1 <= N <= 2100, is its UC Merced class
(:func:`ucm_source`: classes in alphabetical order, 100 photos each; ``../shared/benchmarks/ucm-captions/SOURCES.md``).
A class folder, when present, still wins. **Sydney-captions** does not publish its N -> class mapping in the caption
file: its categories come from a class folder (``python -m aerialdata.prepare sydney --classes ...``), else they are
``unknown`` (never guessed). :data:`KNOWN_GSD` holds the ground resolution of the sets that have one
(:attr:`CaptionDataset.known_gsd`); RSICD's tiles vary (about 0.5-8 m/px) and have none.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from segcap.errors import ConfigError, DataError, DatasetNotFoundError

SPLITS = ("train", "val", "test", "restval")
DEFAULT_JSON = "dataset_rsicd.json"
IMAGE_DIRS = ("RSICD_images", "imgs", "UCM_images", "images")  # searched in this order when images_dir is not given

# UC Merced Land Use classes in alphabetical order: UCM-captions numbers its photos class by class in this order
UCM_CLASSES = (
    "agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral", "denseresidential", "forest",
    "freeway", "golfcourse", "harbor", "intersection", "mediumresidential", "mobilehomepark", "overpass", "parkinglot",
    "river", "runway", "sparseresidential", "storagetanks", "tenniscourt",
)
UCM_PER_CLASS = 100
UCM_COUNT = len(UCM_CLASSES) * UCM_PER_CLASS  # 2,100
KNOWN_GSD = {"ucm": 0.3, "sydney": 0.5}  # ground resolution (m per pixel) of the caption sets that have one
_NUMBERED = re.compile(r"^(\d+)\.(tif|tiff|png|jpg|jpeg)$", re.IGNORECASE)


@dataclass
class CaptionImage:
    filename: str
    imgid: int
    split: str
    sentences: list[str]
    category: str = ""
    extra: dict = field(default_factory=dict, repr=False)


def is_blank(caption: str) -> bool:
    """True for a caption with no letter or digit: empty, spaces only, or punctuation only (``"."``)."""
    return not any(ch.isalnum() for ch in caption)


def screen_blank_captions(items: Sequence[CaptionImage], where: str, option: str = "split", shown: int = 3
                          ) -> tuple[list[CaptionImage], str | None, str | None]:
    """Leave out the blank captions (:func:`is_blank`) of ``items`` (the images of one split).

    Returns ``(kept, note, problem)``: ``kept`` holds copies of the images with their blank captions removed (an image
    left without a caption is left out); ``note`` says what was left out (None when nothing was); ``problem`` is set
    when no caption at all is left (the split cannot be trained on: the caller refuses it). ``where`` names the split
    in messages, e.g. ``"data/rsicd/dataset_rsicd.json, train split"``; ``option`` the flag that chooses the split,
    for the fix (``--train-split``).
    """
    kept: list[CaptionImage] = []
    blank: list[tuple[int, int, str]] = []  # (sentence index, image index, "pond_1.jpg sentences[0] ''")
    emptied: list[str] = []  # images left without a caption
    total = 0
    for i, it in enumerate(items):
        good = [s for s in it.sentences if not is_blank(s)]
        blank += [(j, i, f"{it.filename} sentences[{j}] {s!r}") for j, s in enumerate(it.sentences) if is_blank(s)]
        total += len(it.sentences)
        if good:
            kept.append(it if len(good) == len(it.sentences) else dataclasses.replace(it, sentences=good))
        else:
            emptied.append(it.filename)
    if kept and not blank and not emptied:
        return kept, None, None
    first = [text for _, _, text in sorted(blank)[:shown]]  # several images' first blank caption before a second one
    examples = ", ".join(first) + (f" and {len(blank) - shown} more" if len(blank) > shown else "")
    if not kept:
        what = (f"all {total} captions of its {len(items)} images are blank (empty, or no letter or digit), e.g. "
                f"{examples}" if total else f"its {len(items)} images have no captions (empty sentences lists)")
        return [], None, (f"{where}: {what}; a model cannot learn to caption from them: fill in the images' "
                          f"sentences[].raw in the caption file, or choose another {option}")
    parts = []
    if blank:
        parts.append(f"{len(blank)} of {total} captions are blank (empty, or no letter or digit) and left out, "
                     f"e.g. {examples}")
    if emptied:
        few = ", ".join(emptied[:shown]) + (f" and {len(emptied) - shown} more" if len(emptied) > shown else "")
        parts.append(f"{len(emptied)} of {len(items)} images are left out, having no caption left ({few})")
    return kept, f"note: {where}: " + "; ".join(parts), None


def category_from_filename(filename: str) -> str:
    """``denseresidential_12.jpg`` -> ``denseresidential``; ``river12.jpg`` -> ``river``; ``00012.jpg`` -> ``unknown``."""
    stem = Path(filename).stem
    cat = re.sub(r"[_\-\s]*\d+$", "", stem).rstrip("_- ")
    return cat.lower() or "unknown"


def dataset_key(name: str) -> str:
    """The short name of a caption set from its JSON's ``"dataset"`` value: ``UCM`` / ``ucm-captions`` -> ``ucm``,
    ``Sydney`` -> ``sydney``, ``rsicd`` -> ``rsicd``."""
    key = name.strip().lower().replace("_", "-")
    return key.removesuffix("-captions") or key


def _json_key(json_name: str) -> str:
    """The set a JSON's file name names, for a JSON without a ``"dataset"`` value: ``dataset_ucm.json`` -> ``ucm``."""
    return Path(json_name).stem.removeprefix("dataset").lstrip("_-")


def numbered(filename: str) -> int | None:
    """N of a numbered image file name (``81.tif`` -> 81), as UCM- and Sydney-captions name their photos; else None."""
    m = _NUMBERED.match(filename)
    return int(m.group(1)) if m else None


def ucm_source(n: int) -> tuple[str, int]:
    """UCM-captions' ``N.tif`` -> (UC Merced class, photo index): the photo is ``<class><index:02d>.tif``.

    Classes in alphabetical order, 100 photos each: class ``(N-1) // 100``, photo ``(N-1) % 100``, except the first
    class, shifted by one (1.tif..9.tif are agricultural01..09, 100.tif is agricultural00): photo ``N % 100``.
    """
    if not 1 <= n <= UCM_COUNT:
        raise ValueError(f"UCM-captions numbers its photos 1..{UCM_COUNT}, not {n}")
    k = (n - 1) // UCM_PER_CLASS
    return UCM_CLASSES[k], (n % UCM_PER_CLASS if k == 0 else (n - 1) % UCM_PER_CLASS)


def ucm_category(filename: str) -> str | None:
    """The UC Merced class of a UCM-captions file name (``101.tif`` -> ``airplane``); None if it is not ``N.tif``."""
    n = numbered(filename)
    return ucm_source(n)[0] if n is not None and 1 <= n <= UCM_COUNT else None


class CaptionSetNotFoundError(DatasetNotFoundError):
    def __init__(self, root: Path, missing: Path):
        super().__init__(
            f"caption set not found: {missing} does not exist (searched root {root}). "
            "Point --data-root (or --references) at a folder holding the caption JSON (dataset_rsicd.json, "
            "dataset.json, dataset_ucm.json...) or at the JSON itself, or create the synthetic set "
            "with `python -m synthetic.generate --out data/synthetic`"
        )


def find_json(root: Path) -> str:
    """The caption JSON's name in ``root``: ``dataset_rsicd.json`` if present, else the single ``dataset*.json``
    (several: a DataError); ``dataset_rsicd.json`` when there is none (or no root: the reader reports it)."""
    root = Path(root)
    if (root / DEFAULT_JSON).is_file() or not root.is_dir():
        return DEFAULT_JSON
    found = sorted(p.name for p in root.glob("dataset*.json") if p.is_file())
    if len(found) > 1:
        raise DataError(f"{root} holds {len(found)} caption files ({', '.join(found)}); say which one: "
                        f"pass json_name, or the JSON itself as the root (--references {root / found[0]})")
    return found[0] if found else DEFAULT_JSON


def find_images_dir(root: Path, default: str = "RSICD_images") -> str:
    """The images folder's name in ``root``: the first existing of :data:`IMAGE_DIRS` (``default`` when none)."""
    return next((d for d in IMAGE_DIRS if (Path(root) / d).is_dir()), default)


class CaptionDataset:
    """A caption set in Karpathy-split JSON; items in file order, optionally one split only.

    The class attributes are the RSICD defaults; an instance holds the names it uses (given, or found in ``root`` as
    the module docstring says) in ``self.json_name``, ``self.images_dir`` and ``self.classes_dir``.

    Args:
        root: folder holding the JSON, or the JSON file itself.
        split: keep only images of this split (train, val, test, restval); None keeps all.
        json_name: name of the JSON file inside ``root``; default: found in ``root``.
        images_dir: folder of images inside ``root``; default: the first existing of :data:`IMAGE_DIRS`.
        classes_dir: optional folder of ``<category>.txt`` lists inside ``root``; default: found in ``root``.
        masks_dir: optional folder of exact source-id masks inside ``root``.
    """

    json_name = "dataset_rsicd.json"
    images_dir = "RSICD_images"
    classes_dir = "txtclasses_rsicd"
    masks_dir = "label_images_semantic"

    def __init__(
        self,
        root: str | Path,
        split: str | None = None,
        json_name: str | None = None,
        images_dir: str | None = None,
        classes_dir: str | None = None,
        masks_dir: str | None = None,
    ):
        root = Path(root)
        if root.suffix.lower() == ".json":
            json_name, root = root.name, root.parent
        self.root = root
        self.json_name = json_name or self._find_json()
        self.images_dir = images_dir or self._find_images_dir()
        self.classes_dir = classes_dir or self._find_classes_dir()
        self.masks_dir = masks_dir or self.masks_dir
        if split is not None and split not in SPLITS:
            raise ConfigError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        self.split = split
        self._verify()
        self.dataset_name, all_items = self._load()
        if split is not None:
            present = sorted({it.split for it in all_items})
            items = [it for it in all_items if it.split == split]
            if not items:
                raise ConfigError(f"{self.json_path}: no images in split {split!r}; splits present: {', '.join(present)}")
        else:
            items = all_items
        self.items: list[CaptionImage] = items
        self._by_name = {it.filename: it for it in items}

    # ---------------------------------------------------------------- files
    @property
    def json_path(self) -> Path:
        return self.root / self.json_name

    def _find_json(self) -> str:
        return find_json(self.root)

    def _find_images_dir(self) -> str:
        return find_images_dir(self.root, type(self).images_dir)

    def _find_classes_dir(self) -> str:
        """``txtclasses_<name>`` of the JSON (``dataset_ucm.json`` -> ``txtclasses_ucm``), else the class default,
        else the single ``txtclasses*`` folder (several and none of these: a DataError)."""
        default = type(self).classes_dir
        own = "txtclasses_" + (_json_key(self.json_name) or "rsicd")
        for name in (own, default):
            if (self.root / name).is_dir():
                return name
        found = sorted(p.name for p in self.root.glob("txtclasses*") if p.is_dir()) if self.root.is_dir() else []
        if len(found) > 1:
            raise DataError(f"{self.root} holds {len(found)} class folders ({', '.join(found)}) and none is named "
                            f"{own} after {self.json_name}; pass classes_dir, or remove the ones that do not belong")
        return found[0] if found else default

    def _verify(self) -> None:
        if not self.root.is_dir():
            raise CaptionSetNotFoundError(self.root, self.root)
        if not self.json_path.is_file():
            raise CaptionSetNotFoundError(self.root, self.json_path)

    def _load(self) -> tuple[str, list[CaptionImage]]:
        try:
            raw = json.loads(self.json_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{self.json_path}: not valid JSON ({e}); expected Karpathy-split caption JSON") from e
        if not isinstance(raw, dict) or not isinstance(raw.get("images"), list):
            raise DataError(f'{self.json_path}: expected an object with an "images" list (Karpathy-split format)')
        if isinstance(raw.get("annotations"), list):
            raw = self._from_coco(raw)
        categories = self._read_categories()
        name = str(raw.get("dataset", "") or "")
        # UCM-captions' N.tif names say nothing of the class: N gives it
        ucm = dataset_key(name or _json_key(self.json_name)) == "ucm"
        items: list[CaptionImage] = []
        seen: set[str] = set()
        for i, im in enumerate(raw["images"]):
            try:
                fn = str(im["filename"])
                split = str(im.get("split", ""))
                sents = [str(s["raw"]).strip() for s in im["sentences"]]
            except (KeyError, TypeError) as e:
                raise DataError(
                    f"{self.json_path}: images[{i}] lacks {e}; each image needs filename, split and sentences[].raw"
                ) from e
            if split not in SPLITS:
                raise DataError(f"{self.json_path}: images[{i}] ({fn}) has split {split!r}; expected one of {SPLITS}")
            if fn in seen:
                raise DataError(f"{self.json_path}: filename {fn} appears twice")
            seen.add(fn)
            imgid = im.get("imgid", i)
            if not isinstance(imgid, int) or isinstance(imgid, bool):
                raise DataError(f"{self.json_path}: images[{i}] ({fn}) has id {imgid!r}; image ids must be integers "
                                "(COCO images[].id, Karpathy imgid)")
            cat = categories.get(fn) or (ucm and ucm_category(fn)) or category_from_filename(fn)
            items.append(CaptionImage(fn, imgid, split, sents, cat))
        return name, items

    def _from_coco(self, raw: dict) -> dict:
        """COCO caption annotations (``images`` + ``annotations``) -> Karpathy form.

        A COCO file holds one split and does not name it: its images take the split asked for (``test`` if none).
        """
        split = self.split or "test"
        by_id: dict = {}
        images = []
        for i, im in enumerate(raw["images"]):
            try:
                entry = {"filename": str(im["file_name"]), "imgid": im["id"], "split": split, "sentences": []}
            except (KeyError, TypeError) as e:
                raise DataError(f"{self.json_path}: images[{i}] lacks {e}; COCO images need id and file_name") from e
            by_id[im["id"]] = entry
            images.append(entry)
        for i, ann in enumerate(raw["annotations"]):
            try:
                by_id[ann["image_id"]]["sentences"].append({"raw": str(ann["caption"])})
            except KeyError as e:
                raise DataError(f"{self.json_path}: annotations[{i}] refers to unknown image or lacks {e}") from e
        return {"images": images, "dataset": raw.get("info", {}).get("description", "coco")}

    def _read_categories(self) -> dict[str, str]:
        folder = self.root / self.classes_dir
        out: dict[str, str] = {}
        if folder.is_dir():
            for txt in sorted(folder.glob("*.txt")):
                for line in txt.read_text(encoding="utf-8").splitlines():
                    if line.strip():
                        out[line.strip()] = txt.stem.lower()
        return out

    # ---------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> CaptionImage:
        return self.items[i]

    def __iter__(self):
        return iter(self.items)

    def __contains__(self, filename: str) -> bool:
        return filename in self._by_name

    def get(self, filename: str) -> CaptionImage | None:
        return self._by_name.get(filename)

    def image_path(self, filename: str) -> Path:
        return self.root / self.images_dir / filename

    def mask_path(self, filename: str) -> Path:
        return self.root / self.masks_dir / f"{Path(filename).stem}.png"

    @property
    def known_gsd(self) -> float | None:
        """Ground resolution in metres per pixel of a set that has one (UCM 0.3, Sydney 0.5; :data:`KNOWN_GSD`),
        from the JSON's ``"dataset"`` name; None when unknown (RSICD's tiles vary, a synthetic set says its own)."""
        return KNOWN_GSD.get(dataset_key(self.dataset_name or _json_key(self.json_name)))

    @property
    def has_masks(self) -> bool:
        return (self.root / self.masks_dir).is_dir()

    def references(self) -> dict[str, list[str]]:
        """filename -> raw reference captions, in dataset order."""
        return {it.filename: list(it.sentences) for it in self.items}

    def categories(self) -> dict[str, str]:
        """filename -> category."""
        return {it.filename: it.category for it in self.items}
