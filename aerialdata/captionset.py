"""Reader for caption sets in the Karpathy-split JSON format (RSICD, UCM-captions, Sydney-captions, Flickr8k/30k).

On disk (names are defaults; every one can be changed)::

    <root>/dataset_rsicd.json              {"images": [{"filename", "imgid", "split", "sentences": [{"raw", ...}]}]}
    <root>/RSICD_images/<filename>         the images
    <root>/txtclasses_rsicd/<category>.txt optional: one filename a line
    <root>/label_images_semantic/<stem>.png optional: exact masks of drone source ids (written by synthetic.generate)

The category of an image comes from ``txtclasses_rsicd`` when present, else from its filename
(``denseresidential_12.jpg`` -> ``denseresidential``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from segcap.errors import ConfigError, DataError, DatasetNotFoundError

SPLITS = ("train", "val", "test", "restval")


@dataclass
class CaptionImage:
    filename: str
    imgid: int
    split: str
    sentences: list[str]
    category: str = ""
    extra: dict = field(default_factory=dict, repr=False)


def category_from_filename(filename: str) -> str:
    """``denseresidential_12.jpg`` -> ``denseresidential``; ``river12.jpg`` -> ``river``; ``00012.jpg`` -> ``unknown``."""
    stem = Path(filename).stem
    cat = re.sub(r"[_\-\s]*\d+$", "", stem).rstrip("_- ")
    return cat.lower() or "unknown"


class CaptionSetNotFoundError(DatasetNotFoundError):
    def __init__(self, root: Path, missing: Path):
        super().__init__(
            f"caption set not found: {missing} does not exist (searched root {root}). "
            "Point --data-root (or --references) at a folder holding dataset_rsicd.json, or create the synthetic set "
            "with `python -m synthetic.generate --out data/synthetic`"
        )


class CaptionDataset:
    """A caption set in Karpathy-split JSON; items in file order, optionally one split only.

    Args:
        root: folder holding the JSON, or the JSON file itself.
        split: keep only images of this split (train, val, test, restval); None keeps all.
        json_name: name of the JSON file inside ``root``.
        images_dir: folder of images inside ``root``.
        classes_dir: optional folder of ``<category>.txt`` lists inside ``root``.
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
        self.json_name = json_name or self.json_name
        self.images_dir = images_dir or self.images_dir
        self.classes_dir = classes_dir or self.classes_dir
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
            cat = categories.get(fn) or category_from_filename(fn)
            items.append(CaptionImage(fn, imgid, split, sents, cat))
        return str(raw.get("dataset", "")), items

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
    def has_masks(self) -> bool:
        return (self.root / self.masks_dir).is_dir()

    def references(self) -> dict[str, list[str]]:
        """filename -> raw reference captions, in dataset order."""
        return {it.filename: list(it.sentences) for it in self.items}

    def categories(self) -> dict[str, str]:
        """filename -> category."""
        return {it.filename: it.category for it in self.items}
