"""What every captioner shares: the model folder's ``captioner.yaml``, devices, the ``caption(images)`` loop over
batches (:class:`Captioner`) and what captioners.train asks of an architecture's training (:class:`Job`). The
architectures themselves are the table :data:`captioners.registry.ARCHS`.

A trained model folder (``captioners.train --out``) holds everything needed to load it::

    captioner.yaml   format, arch, the options that rebuild the model, what it was trained on (written last)
    model.pt         cnn-lstm: state dict (trunk + adapter + decoder);  vocab.json: its word vocabulary
    config.json ...  vit-gpt2 / blip: the transformers checkpoint (weights, tokenizer, image processor), loadable
                     by plain ``from_pretrained`` too
    metrics.json     losses per epoch, best epoch, times, sizes
    history.png      train and val loss per epoch (history.csv: the same figures)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml

from aerialdata.captionset import CaptionDataset, CaptionImage
from captioners.data import check_image
from captioners.registry import ARCHS
from segcap.atomic import write_text
from segcap.errors import ConfigError, DataError, one_line
from segcap.options import PositiveInt, checked
from segcap.progress import Progress

Device = Literal["auto", "cpu", "cuda"]
CONFIG_FILE = "captioner.yaml"
FORMAT = "segcap.captioner/1"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when there is one, else the CPU; ``cuda`` without CUDA is a ConfigError."""
    name = str(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name}: torch sees no CUDA device here; use --device cpu (or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"device {name!r} is not one of auto, cpu, cuda")
    return torch.device(name)


def write_config(folder: Path, arch: str, options: dict[str, Any], trained_on: dict[str, Any]) -> Path:
    """Write ``captioner.yaml`` (written last by training: its presence marks a finished folder)."""
    doc = {"format": FORMAT, "arch": arch, "options": options, "trained_on": trained_on}
    return write_text(folder / CONFIG_FILE, yaml.safe_dump(doc, sort_keys=False))


def read_config(folder: Path) -> dict[str, Any]:
    """``captioner.yaml`` of a model folder, checked: format, a known arch, an options mapping."""
    path = Path(folder) / CONFIG_FILE
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({one_line(e)}); the model folder is damaged, train it again") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise DataError(f"{path}: not a segcap captioner file (expected format: {FORMAT})")
    if doc.get("arch") not in ARCHS:
        raise DataError(f"{path}: arch {doc.get('arch')!r} is not one of {', '.join(ARCHS)}")
    if not isinstance(doc.get("options"), dict):
        raise DataError(f"{path}: options must be a mapping; the model folder is damaged, train it again")
    return doc


class Captioner:
    """Pixels in, captions out. Subclasses set :attr:`arch` and implement :meth:`_caption_batch`.

    Attributes:
        arch: its name in :data:`captioners.registry.ARCHS`.
        folder: where the model was loaded from (a folder, or a hub id for a zero-shot checkpoint).
        device: where it runs.
        max_length: longest caption, in words (cnn-lstm) or tokens (vit-gpt2, blip).
    """

    arch: str = ""

    @classmethod
    def load(cls, folder: str | Path, device: torch.device, options: dict[str, Any] | None = None) -> Captioner:
        """The captioner in a folder written by captioners.train (``options``: its captioner.yaml's), or in a
        pretrained checkpoint (``options`` None) where the architecture has them."""
        raise NotImplementedError

    def __init__(self, folder: str | Path, device: torch.device, max_length: int):
        self.folder = folder
        self.device = device
        self.max_length = max_length

    @checked
    @torch.inference_mode()
    def caption(self, images: Sequence[np.ndarray], num_beams: PositiveInt = 1, batch_size: PositiveInt = 32,
                max_length: PositiveInt | None = None, progress: bool = False) -> list[str]:
        """One caption per image, in order: greedy for ``num_beams=1``, else beam search of that width.

        Args:
            images: (H, W, 3) uint8 RGB arrays (any size; each is resized as the model was trained).
            num_beams: beam width (1 = greedy).
            batch_size: images per forward pass.
            max_length: longest caption (default: the model's).
            progress: show a bar (terminal) or one line (log).
        """
        length = self.max_length if max_length is None else max_length
        images = [check_image(im, i) for i, im in enumerate(images)]
        batches = [images[i: i + batch_size] for i in range(0, len(images), batch_size)]
        out: list[str] = []
        with Progress(total=len(images), desc=f"captioning ({self.arch}, beams={num_beams})", unit="image",
                      enabled=progress) as bar:
            for batch in batches:
                out.extend(self._caption_batch(batch, num_beams, length))
                bar.update(len(batch))
        return out

    def _caption_batch(self, images: list[np.ndarray], num_beams: int, max_length: int) -> list[str]:
        raise NotImplementedError

    def parameters(self) -> int:
        """The number of weights."""
        return sum(p.numel() for p in self.module.parameters())

    @property
    def module(self) -> torch.nn.Module:
        raise NotImplementedError


class Job:
    """One architecture's training as captioners.train sees it: its checks of the options, then its model with its
    vocabulary or tokenizer, its images made ready, the loss of a batch, and what it saves.

    Built as ``job(options, train_items, device)``, ``options`` being captioners.train's arguments.
    """

    freeze_encoder = False  # freeze_encoder's default
    loss_name = "cross-entropy per token"
    module: torch.nn.Module  # what is trained and saved in the training state
    cache_seconds: float = 0.0  # time to make its images ready

    @classmethod
    def problems(cls, o: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
        """What is wrong with the options for this architecture (the options of other architectures are refused by
        captioners.train from :data:`captioners.registry.ARCHS`)."""
        return []

    @classmethod
    def builds_vocabulary(cls, o: dict[str, Any]) -> bool:
        """Whether it builds a word vocabulary from the training captions (``min_count``)."""
        return False

    @classmethod
    def learning_rate(cls, o: dict[str, Any]) -> float:
        """AdamW's learning rate when none is given."""
        raise NotImplementedError

    def __init__(self, o: dict[str, Any], train: list[CaptionImage], device: torch.device):
        """Its model on ``device``, with the vocabulary or tokenizer it builds from the training images' captions."""
        raise NotImplementedError

    def prepare(self, ds: CaptionDataset, train: list[CaptionImage], val: list[CaptionImage], progress: bool):
        """Make the images of both splits ready (read and resized, or their features cached)."""

    def loss(self, split: str, batch: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(mean loss to back-propagate, summed loss, words or tokens) of the images at ``batch`` in ``split``
        (train or val), each with all its captions."""
        raise NotImplementedError

    def train(self, mode: bool) -> None:
        """Training (True) or evaluation (False) mode."""

    def save(self, folder: Path) -> None:
        """Its weights and vocabulary or tokenizer into the model folder."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """What rebuilds it: the options of captioner.yaml, which its Captioner's ``load`` reads."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the log: the model and its data."""
        return ""

    def figures(self, val: list[CaptionImage]) -> dict[str, Any]:
        """Its own figures for metrics.json."""
        return {}


def flatten(items: Sequence[CaptionImage], batch: list[int]) -> tuple[list[int], list[str]]:
    """(owner position in the batch, caption) for every caption of the batch's images."""
    owner, caps = [], []
    for pos, i in enumerate(batch):
        for s in items[i].sentences:
            owner.append(pos)
            caps.append(s)
    return owner, caps
