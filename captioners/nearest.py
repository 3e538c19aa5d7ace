"""The nearest training image in the CNN+LSTM's own image-feature space: a lookup reference for the captioners.

    feats = ImageEncoder(ds, train_items, encoder="mobilenet_v2", encoder_stride=8, image_size=128).features(items)
    captions = image_nearest(ds, train_items, test_items, encoder="mobilenet_v2", image_size=128)

The encoder is the one ``captioners.train`` builds for a cnn-lstm with the same options (:func:`build_trunk`, after
``torch.manual_seed(seed)`` as training does, so random weights are the very weights the captioner's frozen trunk
gets); random weights have their BatchNorm statistics estimated on the first :data:`CALIBRATION_IMAGES` training
images, as training does (:func:`calibrate_batchnorm`). The images are read and normalised as the captioner reads
them (:class:`captioners.data.ImageStore`, :func:`captioners.cnn_lstm.pixels`).

A feature is the global average pool of the trunk's output map, L2-normalised; a test image's neighbour is the
training image of highest cosine similarity (ties: the first in training order). Which of the neighbour's captions
to return is the caller's choice (``choose``; the pipeline's ``image_nearest`` system chooses as its composition
lookup ``nearest`` does), so the two lookups differ only in the space they search.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from aerialdata.captionset import CaptionDataset, CaptionImage
from captioners.base import resolve_device
from captioners.cnn_lstm import pixels
from captioners.data import ImageStore
from captioners.encoders import CALIBRATION_IMAGES, build_trunk, calibrate_batchnorm
from segcap.errors import DataError

BATCH = 64  # images per forward pass


class ImageEncoder:
    """The cnn-lstm's trunk as a feature extractor: (N, C) L2-normalised features of caption-set images.

    Args:
        ds: the caption set (for the image paths; its ``images_dir`` names the folder).
        calibration_items: the images whose first :data:`CALIBRATION_IMAGES` estimate a random trunk's BatchNorm
            statistics (the training split, as captioners.train does).
        encoder, encoder_weights, encoder_stride, image_size, seed: the cnn-lstm's options of the same names
            (captioners.train).
        device: auto (CUDA when there is one), cpu or cuda.
    """

    def __init__(self, ds: CaptionDataset, calibration_items: Sequence[CaptionImage], encoder: str = "mobilenet_v2",
                 encoder_weights: str | Path | None = None, encoder_stride: int = 8, image_size: int = 128,
                 seed: int = 0, device: str = "auto"):
        self.ds, self.size, self.device = ds, image_size, resolve_device(device)
        with torch.random.fork_rng(devices=[]):  # the captioner's seed, leaving the caller's generator as it was
            torch.manual_seed(seed)
            trunk, _, self.weights_source = build_trunk(encoder, encoder_stride, encoder_weights)
        self.trunk = trunk.to(self.device)
        self.calibrated = 0
        if self.weights_source == "random":  # as captioners.train: BatchNorm statistics from the training images
            calib = ImageStore(ds, list(calibration_items), image_size, max_bytes=0)
            self.calibrated = calibrate_batchnorm(self.trunk, (self._pixels(x) for x in
                                                               calib.chunks(stop=CALIBRATION_IMAGES)))
        self.trunk.eval()

    def _pixels(self, images: np.ndarray) -> torch.Tensor:
        return pixels(images, self.size).to(self.device)

    @torch.no_grad()
    def features(self, items: Sequence[CaptionImage]) -> np.ndarray:
        """(len(items), C) float32: each image's trunk map average-pooled over its cells, L2-normalised."""
        parts = []
        for x in ImageStore(self.ds, list(items), self.size, max_bytes=0).chunks(BATCH):
            fmap = self.trunk(self._pixels(x)).float()  # (B, C, h, w)
            parts.append(torch.nn.functional.normalize(fmap.mean(dim=(2, 3)), dim=1).cpu())  # (B, C)
        return torch.cat(parts).numpy() if parts else np.zeros((0, 0), dtype=np.float32)


def nearest_images(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """For each row of ``test`` (M, C), the index of the row of ``train`` (N, C) of highest cosine similarity
    (rows L2-normalised; ties: the lowest index)."""
    if len(train) == 0:
        raise DataError("the image-nearest lookup needs at least one training image; the training split has none")
    return np.argmax(test @ train.T, axis=1) if len(test) else np.zeros(0, dtype=np.int64)


def image_nearest(
    ds: CaptionDataset,
    train_items: Sequence[CaptionImage],
    test_items: Sequence[CaptionImage],
    choose: Callable[[Sequence[str]], str] | None = None,
    **encoder_options,
) -> list[str]:
    """For each test image, a caption of the closest training image in the encoder's feature space.

    Args:
        ds: the caption set (image paths).
        train_items: the training images (their captions are the answers; the first ones calibrate BatchNorm).
        test_items: the images to caption.
        choose: which of the neighbour's captions (default: its first reference).
        **encoder_options: encoder, encoder_weights, encoder_stride, image_size, seed, device (:class:`ImageEncoder`).
    """
    train_items, test_items = list(train_items), list(test_items)
    encoder = ImageEncoder(ds, train_items, **encoder_options)
    train, test = encoder.features(train_items), encoder.features(test_items)
    pick = choose or (lambda captions: captions[0])
    return [pick(train_items[i].sentences) for i in nearest_images(train, test)]
