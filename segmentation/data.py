"""Torch datasets for training and evaluating the segmenter, with the scale augmentation that closes the scale gap.

A labelled source (the drone set, LoveDA, ...: any :class:`aerialdata.sources.LabelledSource`) is at another ground
resolution than the images the model must segment (the caption set): its objects are ``1 / target_scale`` times
larger, where ``target_scale`` = source gsd / caption-set gsd (or the hand-set ratio of the legacy one-drone-set form).
Every training sample is therefore

1. decoded at ``target_scale`` times a random jitter (log-uniform in [1/jitter, jitter]), so objects have the size
   they have in the caption set, give or take (JPEG DCT scaling keeps huge photos cheap, see :mod:`aerialdata.images`);
2. padded (mask value 255, ignored) and randomly cropped to ``crop_size``;
3. flipped, rotated by multiples of 90 degrees and colour-jittered (albumentations);
4. normalised (ImageNet mean/std) into a (3, crop, crop) float tensor; the mask is a (crop, crop) int64 tensor.

Mask value 255 (``IGNORE``: padding, a source's no-data, a class the source cannot tell apart) is counted by no loss
and no metric. Several sources train together as a :class:`MixedCropDataset` (one :class:`ScaledCropDataset` each,
with :func:`crops_per_image_for` balancing them by area). Evaluation samples keep the whole image at a fixed scale;
:func:`pad_collate` pads a batch to a multiple of 32.
"""

from __future__ import annotations

import math
import random
import statistics
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from aerialdata.captionset import CaptionDataset
from aerialdata.classes import ClassTable
from aerialdata.images import image_size, open_image, read_mask, read_rgb_scaled, resize_mask
from aerialdata.sources import LabelledSource
from segcap.errors import DataError, DatasetNotFoundError
from segmentation.metrics import IGNORE_INDEX
from segmentation.model import IMAGENET_MEAN, IMAGENET_STD, PAD_MULTIPLE


def to_tensors(image: np.ndarray, mask: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """(H, W, 3) uint8 + (H, W) uint8 -> normalised (3, H, W) float32 + (H, W) int64."""
    x = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1).float().div_(255)
    x = (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return x, torch.from_numpy(np.require(mask, requirements=["C", "W"])).long()


def train_augmentation(crop_size: int, seed: int | None = None, color_jitter: float = 0.25) -> A.Compose:
    """Pad-and-crop, flips, 90-degree rotations and colour jitter; padding gets mask value 255 (ignored)."""
    return A.Compose(
        [
            A.PadIfNeeded(crop_size, crop_size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=IGNORE_INDEX),
            A.RandomCrop(crop_size, crop_size),
            A.HorizontalFlip(p=0.5),
            A.VerticalFlip(p=0.5),
            A.RandomRotate90(p=0.5),
            A.ColorJitter(
                brightness=color_jitter, contrast=color_jitter, saturation=color_jitter, hue=0.02, p=0.8
            ),
        ],
        seed=seed,
    )


class ScaledCropDataset(Dataset):
    """Random scale-jittered crops of one labelled source's images, for training.

    Args:
        source: the labelled source (a :class:`~aerialdata.drone.DroneDataset` or any other reader with
            ``load(i, scale)``).
        indices: which of its images (the training split).
        crop_size: side of the square crops, in pixels after scaling.
        target_scale: resize factor that brings the source's images to the target ground resolution (0.25: objects 4x
            smaller, as the synthetic drone set against the synthetic caption set).
        scale_jitter: the factor is drawn log-uniformly in [target/jitter, target*jitter] (1.0: no jitter).
        crops_per_image: samples drawn from each image per epoch (more for large photos).
        seed: seed of the scale draws and the augmentation (reseeded per epoch by :meth:`set_epoch`).
        cache: keep each decoded image (at the largest jittered scale) in memory after its first use.
        stream: which of several datasets drawing with the same seed this is (0: the first; each gets its own
            random streams, and stream 0 draws what a lone dataset draws).
    """

    def __init__(
        self,
        source: LabelledSource,
        indices: list[int],
        crop_size: int,
        target_scale: float,
        scale_jitter: float = 1.25,
        crops_per_image: int = 1,
        seed: int | None = None,
        cache: bool = False,
        stream: int = 0,
    ):
        self.source, self.indices = source, list(indices)
        self.crop_size, self.target_scale = crop_size, target_scale
        self.scale_jitter = max(1.0, scale_jitter)
        self.crops_per_image = max(1, crops_per_image)
        self.seed = seed
        self.stream = stream
        self.augment = train_augmentation(crop_size, self._seed_for(seed))
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._rng = random.Random(self._seed_for(seed))

    def _seed_for(self, seed: int | None) -> int | None:
        """``seed`` itself for stream 0; another seed, drawn from (seed, stream), for the others."""
        if seed is None or not self.stream:
            return seed
        return int(np.random.SeedSequence([seed, self.stream]).generate_state(1)[0])

    def reseed(self, seed: int) -> None:
        """Reseed the scale draws and the augmentation (a DataLoader worker, from its own seed)."""
        seed = self._seed_for(seed % 2**32) % 2**32
        self._rng.seed(seed)
        self.augment.set_random_seed(seed)

    def __len__(self) -> int:
        return len(self.indices) * self.crops_per_image

    def set_epoch(self, epoch: int) -> None:
        """Reseed the scale draws and the augmentation from (seed, epoch), so that an epoch's crops do not depend on
        the epochs before it: a run resumed at this epoch draws what an uninterrupted run would (without workers;
        each worker reseeds itself from torch's per-worker seed). No effect without a seed."""
        if self.seed is None:
            return
        key = [self.seed, epoch] + ([self.stream] if self.stream else [])
        scale_seed, augment_seed = np.random.SeedSequence(key).generate_state(2)
        self._rng.seed(int(scale_seed))
        self.augment.set_random_seed(int(augment_seed))

    def draw_scale(self) -> float:
        j = math.log(self.scale_jitter)
        return self.target_scale * math.exp(self._rng.uniform(-j, j))

    def _load(self, i: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
        if not self.cache:
            return self.source.load(i, scale)
        if i not in self._cache:
            self._cache[i] = self.source.load(i, self.target_scale * self.scale_jitter)
        image, mask = self._cache[i]
        size = (max(1, round(mask.shape[1] * scale / (self.target_scale * self.scale_jitter))),
                max(1, round(mask.shape[0] * scale / (self.target_scale * self.scale_jitter))))
        return cv2.resize(image, size, interpolation=cv2.INTER_AREA), resize_mask(mask, size)

    def __getitem__(self, k: int):
        i = self.indices[k // self.crops_per_image]
        image, mask = self._load(i, self.draw_scale())
        out = self.augment(image=image, mask=mask)
        return to_tensors(out["image"], out["mask"])


def unreadable_pairs(image_paths: list[Path], mask_paths: list[Path], indices: list[int]) -> list[str]:
    """What is wrong with the image and mask files of ``indices``, read from their headers only (no pixel decoded, so
    a whole source is checked in seconds before training): an empty or non-image file, a mask that is not
    single-channel, a mask of another size than its image. One line per bad pair, naming the file."""
    bad = []
    for i in indices:
        try:
            size = image_size(image_paths[i])
            with open_image(mask_paths[i], "mask") as im:
                if im.mode not in ("L", "P", "I", "I;16", "1"):
                    raise DataError(f"{mask_paths[i]}: mask has mode {im.mode}; expected a single-channel PNG of "
                                    "class ids (mode L or P), not a colour rendering")
                if im.size != size:
                    raise DataError(f"{mask_paths[i]}: mask is {im.size[0]}x{im.size[1]} but its image "
                                    f"{image_paths[i].name} is {size[0]}x{size[1]}")
        except DataError as e:
            bad.append(str(e))
    return bad


def unreadable_problem(bad: list[str], total: int, what: str, shown: int = 3) -> str | None:
    """One message for the bad pairs of :func:`unreadable_pairs` among ``total`` of ``what`` (None when none)."""
    if not bad:
        return None
    few = "; ".join(bad[:shown]) + (f"; and {len(bad) - shown} more" if len(bad) > shown else "")
    return (f"{'all ' if len(bad) == total else ''}{len(bad)} of the {total} images of {what} cannot be used: {few}; "
            "replace or remove them")


class CaptionMaskSet:
    """Images of a caption set with their exact masks (source ids, grouped with ``table``); ``load(i, scale)`` as the
    labelled sources have it.

    Args:
        root: caption-set folder (Karpathy JSON + images + ``label_images_semantic/``).
        table: class table used to group the source-id masks.
        split: which split (the figure that matters is ``test``).
    """

    def __init__(self, root: str | Path, table: ClassTable, split: str = "test"):
        self.captions = CaptionDataset(root, split=split)
        if not self.captions.has_masks:
            raise DatasetNotFoundError(
                f"{self.captions.root / self.captions.masks_dir}: the caption set has no masks folder, so its "
                "segmentation mIoU cannot be measured (real RSICD has none; the synthetic set writes them)"
            )
        self.table = table
        self.stems = [Path(it.filename).stem for it in self.captions]
        self.image_paths = [self.captions.image_path(it.filename) for it in self.captions]
        self.mask_paths = [self.captions.mask_path(it.filename) for it in self.captions]

    def __len__(self) -> int:
        return len(self.stems)

    def load(self, i: int, scale: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        image = read_rgb_scaled(self.image_paths[i], scale)
        source = read_mask(self.mask_paths[i])
        mask = self.table.group(source, where=self.mask_paths[i])
        if scale in (None, 1.0) and mask.shape != image.shape[:2]:
            raise DataError(
                f"{self.mask_paths[i]}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]}; masks must have the size of their image"
            )
        return image, resize_mask(mask, (image.shape[1], image.shape[0]))


class EvalDataset(Dataset):
    """Whole images at a fixed scale, for validation: items are (image tensor, mask tensor, index).

    Args:
        source: a labelled source or a :class:`CaptionMaskSet` (anything with ``load(i, scale)``).
        indices: which of its items.
        scale: resize factor (a source's training scale, without jitter; 1.0 for the caption set).
    """

    def __init__(self, source, indices: list[int], scale: float | None):
        self.source, self.indices, self.scale = source, list(indices), scale

    def __len__(self) -> int:
        return len(self.indices)

    def raw(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.source.load(self.indices[k], self.scale)

    def __getitem__(self, k: int):
        image, mask = self.raw(k)
        x, y = to_tensors(image, mask)
        return x, y, k


class MixedCropDataset(ConcatDataset):
    """The training crops of several sources, one :class:`ScaledCropDataset` each, drawn as one dataset.

    Index ``k`` runs through the first source's crops, then the second's...; the loader shuffles them together.
    :meth:`set_epoch` and :meth:`reseed` reach every part.
    """

    def __init__(self, parts: list[ScaledCropDataset]):
        super().__init__(parts)
        self.parts = parts

    def set_epoch(self, epoch: int) -> None:
        for part in self.parts:
            part.set_epoch(epoch)

    def reseed(self, seed: int) -> None:
        for part in self.parts:
            part.reseed(seed)


def crops_per_image_for(source: LabelledSource, indices: list[int], scale: float, crop_size: int,
                        crops_per_image: int, probe: int = 64) -> int:
    """Crops per image and epoch for one source: ``crops_per_image`` for each crop-sized area of its images.

    The balance rule of training on several sources: an image gives ``crops_per_image`` x max(1, round(its area at
    the training ``scale`` / ``crop_size``^2)) crops, the area taken as the median over up to ``probe`` of its images
    (read from the file headers). So every pixel of every source is drawn about as often, whatever the image sizes:
    a 1024x1024 LoveDA tile at scale 0.3 (307x307 px) gives 10 crops of 96 px where a 480x320 drone photo at 0.25
    (120x80) gives 1, and each source weighs in proportion to the ground it covers.
    """
    if not indices:
        return crops_per_image
    step = max(1, len(indices) // probe)
    areas = []
    for i in indices[::step][:probe]:
        w, h = source.size(i)
        areas.append(w * h * scale * scale)
    return crops_per_image * max(1, round(statistics.median(areas) / crop_size**2))


def source_split(source: LabelledSource, val_fraction: float, seed: int,
                 limit: int | None = None) -> tuple[list[int], list[int]]:
    """Train and val item indices of a source: its published split where it has one, else seeded by file.

    Items the source publishes as ``val`` are the val split and its ``test`` items are left out, when its ``splits``
    name any ``val`` item; otherwise :func:`split_by_file` holds out ``val_fraction`` of its items (``test`` ones
    still left out). ``limit`` keeps only the first N items of the source.
    """
    n = len(source) if limit is None else min(limit, len(source))
    splits = source.splits[:n] if source.splits is not None else [None] * n
    usable = [i for i in range(n) if splits[i] != "test"]
    if "val" in splits:
        return [i for i in usable if splits[i] != "val"], [i for i in usable if splits[i] == "val"]
    train, val = split_by_file([source.stems[i] for i in usable], val_fraction, seed)
    return [usable[k] for k in train], [usable[k] for k in val]


def pad_collate(batch):
    """Stack samples of different sizes: pad images with 0 and masks with 255 to a common multiple of 32."""
    h = max(b[0].shape[1] for b in batch)
    w = max(b[0].shape[2] for b in batch)
    h, w = h + (-h) % PAD_MULTIPLE, w + (-w) % PAD_MULTIPLE
    xs = torch.zeros((len(batch), 3, h, w))
    ys = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.long)
    for i, b in enumerate(batch):
        xs[i, :, : b[0].shape[1], : b[0].shape[2]] = b[0]
        ys[i, : b[1].shape[0], : b[1].shape[1]] = b[1]
    return xs, ys, torch.tensor([b[2] for b in batch])


def split_by_file(stems: list[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded train/val split of file indices (at least one of each when there are two files or more)."""
    n = len(stems)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_val = round(n * val_fraction)
    if n >= 2 and val_fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return train, val
