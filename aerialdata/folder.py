"""Reader for any labelled set laid out as a folder of image/mask pairs, with a class-map YAML: no code per dataset.

On disk (folder names and the mask suffix can be changed)::

    <root>/images/<stem>.<ext>      RGB images: JPEG, PNG, TIFF (8 or 16 bit), BMP, WebP
    <root>/masks/<stem>.png         single-channel uint8 masks of the set's own class ids, same size as the image
    <root>/train.txt, val.txt, ...  optional split lists (one stem or file name a line); without them splits is None

The class map (required; ``configs/classes/maps/example_folder.yaml`` documents the format) says how each class id
lands in the groups. The ground resolution is required too: the source entry's ``gsd``, else the class map's ``gsd:``,
else a synthetic marker's. Masks stored as colour renderings (ISPRS Potsdam/Vaihingen ship RGB labels) must be
converted to class ids first.

Usage::

    from aerialdata.folder import FolderSource
    ds = FolderSource("/data/potsdam_ids", "aerial10", class_map="configs/classes/maps/potsdam.yaml", gsd=0.05)
"""

from __future__ import annotations

from pathlib import Path

from aerialdata.images import list_images
from aerialdata.labelled import Item, PairedSource, SourceNotFoundError, read_split_lists
from segcap.errors import ConfigError, DataError


class FolderSourceNotFoundError(SourceNotFoundError):
    """The folder source's root, its images or masks folder, or its images are missing."""

    def __init__(self, root: Path, missing: Path, images_dir: str, masks_dir: str, hint: str = ""):
        super().__init__(
            "labelled image folder", root, missing,
            layout=f"{root}/{images_dir}/<stem>.<jpg|png|tif> with {root}/{masks_dir}/<stem>.png (class ids)",
            fix=f"{hint + ' ' if hint else ''}Point the source's root at such a folder, or set images_dir/masks_dir",
        )


class FolderSource(PairedSource):
    """Image/mask pairs of a folder, mapped to the table's groups by a class map.

    Args: those of :class:`aerialdata.labelled.PairedSource` (``class_map`` required; ``split``: one with a list
    file), and

        images_dir: folder of images inside ``root``.
        masks_dir: folder of masks inside ``root``.
        mask_suffix: file ending of a mask after the image's stem.
    """

    name = "folder"
    title = "labelled image folder"
    gsd_required = True
    images_dir = "images"
    masks_dir = "masks"
    mask_suffix = ".png"

    def __init__(self, root, table="aerial10", class_map=None, gsd=None, split=None, stems=None,
                 images_dir: str | None = None, masks_dir: str | None = None, mask_suffix: str | None = None):
        if class_map is None:
            raise ConfigError(
                f"folder source {root}: needs a class map (class_map: a YAML file mapping the masks' class ids to "
                "group names); copy configs/classes/maps/example_folder.yaml and edit it"
            )
        self.images_dir = images_dir or self.images_dir
        self.masks_dir = masks_dir or self.masks_dir
        self.mask_suffix = mask_suffix or self.mask_suffix
        super().__init__(root, table, class_map=class_map, gsd=gsd, split=split, stems=stems)

    def _not_found(self, missing: Path, hint: str = "") -> FolderSourceNotFoundError:
        return FolderSourceNotFoundError(self.root, missing, self.images_dir, self.masks_dir, hint)

    def _verify(self) -> None:
        if not self.root.is_dir():
            raise self._not_found(self.root)
        for sub in (self.images_dir, self.masks_dir):
            if not (self.root / sub).is_dir():
                raise self._not_found(self.root / sub)

    def _find(self) -> list[Item]:
        images = list_images(self.root / self.images_dir)
        if not images:
            raise self._not_found(self.root / self.images_dir / "<stem>.jpg", "The images folder holds no images.")
        lists = read_split_lists(self.root, self.split_names)
        items: list[Item] = []
        missing: list[str] = []
        for image in images:
            mask = self.root / self.masks_dir / f"{image.stem}{self.mask_suffix}"
            if not mask.is_file():
                missing.append(image.name)
                continue
            if lists is not None and image.stem not in lists:
                self.skipped.append((str(image), "in no split list"))
                continue
            items.append(Item(image.stem, image, mask, lists[image.stem] if lists is not None else None))
        if missing:
            raise DataError(
                f"{self.root / self.masks_dir}: no mask for {len(missing)} image(s) ({', '.join(missing[:5])}); "
                f"each {self.images_dir}/<stem>.<ext> needs {self.masks_dir}/<stem>{self.mask_suffix}"
            )
        if lists is not None:
            unknown = sorted(set(lists) - {p.stem for p in images})
            if unknown:
                raise DataError(f"{self.root}: the split lists name {len(unknown)} stem(s) with no image in "
                                f"{self.images_dir}/ ({', '.join(unknown[:5])}); fix the lists or add the images")
        return items
