"""The end-to-end captioner architectures: one table, :data:`ARCHS`, that captioners.train, captioners.generate, the
loader (:func:`captioners.model.load_captioner`), the app and the pipeline read.

    from captioners.registry import ARCHS, SYSTEMS
    ARCHS["cnn-lstm"].system             # "cnn_lstm": the pipeline's system name (SYSTEMS["cnn_lstm"] is the entry)
    ARCHS["blip"].needs_checkpoint       # True: trained from a pretrained checkpoint the user names
    ARCHS["vit-gpt2"].default_config()   # the packaged configs/captioners/vit-gpt2-tiny.yaml
    ARCHS["cnn-lstm"].job                # captioners.cnn_lstm.CnnLstmJob: how captioners.train trains it
    ARCHS["cnn-lstm"].load(folder, device, options)   # a trained model folder as a Captioner

An entry names its classes ("module:Class") instead of importing them, as transformers' auto mappings do: the modules
that implement an architecture read this table, and the pipeline reads names and notes without loading any model.

Adding an architecture: one module with its :class:`captioners.base.Captioner` (``load``, ``_caption_batch``) and
its :class:`captioners.base.Job` (``problems``, ``prepare``, ``loss``, ``save``...), and one entry below. Options
that only it reads are an options dataclass here (a :class:`segcap.options.Group`, the one source of their names,
types, defaults and help), named in its entry's ``options`` so that every other architecture refuses them, and
taken by captioners.train's ``main`` as one parameter (flat flags: ``--encoder-stride 8``).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Collection
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from segcap.errors import ConfigError
from segcap.options import Group, NonNegativeFloat, PositiveInt, UnitFraction
from segcap.resources import config_path

if TYPE_CHECKING:
    import torch

    from captioners.base import Captioner, Job


# ---------------------------------------------------------------- options only some architectures read
@dataclass(frozen=True)
class CnnLstmTrainOptions(Group):
    """cnn-lstm only: the CNN encoder and the LSTM decoder with soft attention (Show, Attend and Tell).

    Attributes:
        encoder: the torchvision backbone.
        encoder_weights: empty for random weights, a weights file (torchvision state dict, or a segcap
            segmentation model.pt of the same encoder), or a torchvision weights name (IMAGENET1K_V1, DEFAULT...;
            torch's cache, or downloaded when online).
        encoder_stride: cut the backbone where its feature map is this many times smaller than the image (8 suits
            random weights, 32 is the whole backbone as with ImageNet weights).
        attention_grid: the feature map is average-pooled to at most this many cells a side (the attention's
            locations).
        feature_dim: channels of the trained adapter between backbone and decoder.
        embed_dim: word embedding size.
        hidden_dim: LSTM hidden size.
        attention_dim: attention layer size.
        dropout: dropout before the word classifier.
        alpha_c: weight of the doubly stochastic attention term (0: off).
    """

    encoder: Literal["mobilenet_v2", "resnet50", "vgg16"] = "mobilenet_v2"
    encoder_weights: str | None = None
    encoder_stride: Literal[4, 8, 16, 32] = 8
    attention_grid: PositiveInt = 6
    feature_dim: PositiveInt = 128
    embed_dim: PositiveInt = 64
    hidden_dim: PositiveInt = 256
    attention_dim: PositiveInt = 64
    dropout: UnitFraction = 0.5
    alpha_c: NonNegativeFloat = 1.0


@dataclass(frozen=True)
class PretrainedOptions(Group):
    """vit-gpt2 and blip: the pretrained checkpoint.

    Attributes:
        checkpoint: vit-gpt2: a VisionEncoderDecoder checkpoint folder or hub id (default: a tiny model built here);
            blip: a BLIP captioning checkpoint folder or hub id (required). Not for cnn-lstm.
    """

    checkpoint: str | None = None


@dataclass(frozen=True)
class TinyVitGpt2Options(Group):
    """vit-gpt2 only: the tiny model built when no checkpoint is named.

    Attributes:
        tiny_model: the tiny vit-gpt2's sizes (hidden_size, num_layers, num_heads, patch_size, intermediate_size).
    """

    tiny_model: dict | None = None


@dataclass(frozen=True)
class CaptionerArch:
    """One architecture: what captioners.train, the loader and the pipeline need to know of it."""

    name: str  # --arch, and the arch of a model folder's captioner.yaml
    system: str  # the pipeline's system name: its captioners/<system>/ folder and row of the report
    options: tuple[type[Group], ...]  # the groups of captioners.train options only some architectures read
    job_class: str  # "module:Class" of its training job (captioners.base.Job)
    captioner_class: str  # "module:Class" of its Captioner; its ``load`` reads a trained folder (or a checkpoint)
    config: str | None  # its default captioners.train config; None: it needs a checkpoint the user names
    note: str  # the report's one-line description
    needs_checkpoint: bool = False  # trained (or used zero-shot) from a pretrained ``checkpoint`` only
    model_type: str | None = None  # config.json model_type of its transformers checkpoints (loaded zero-shot)
    example: str | None = None  # a pretrained checkpoint, named in messages

    @property
    def option_names(self) -> tuple[str, ...]:
        """The captioners.train options this architecture reads that some other does not (any other refuses them)."""
        return tuple(f.name for group in self.options for f in fields(group))

    @property
    def job(self) -> type[Job]:
        """The training job class (``job(options, train_items, device)``)."""
        return _resolve(self.job_class)

    @property
    def captioner(self) -> type[Captioner]:
        """The Captioner class."""
        return _resolve(self.captioner_class)

    def load(self, folder: str | Path, device: torch.device, options: dict[str, Any] | None = None) -> Captioner:
        """The captioner in ``folder`` (a captioners.train folder, whose captioner.yaml has ``options``), or in a
        pretrained checkpoint folder or hub id (``options`` None)."""
        return self.captioner.load(folder, device, options)

    def default_config(self) -> Path | None:
        """Its default training config: ./configs/... from a clone's root, else the packaged file."""
        return None if self.config is None else config_path(self.config)


def _resolve(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


ARCHS: dict[str, CaptionerArch] = {a.name: a for a in (
    CaptionerArch(
        name="cnn-lstm", system="cnn_lstm",
        options=(CnnLstmTrainOptions,),
        job_class="captioners.cnn_lstm:CnnLstmJob", captioner_class="captioners.cnn_lstm:CnnLstmCaptioner",
        config="configs/captioners/synthetic.yaml",
        note="end to end: CNN encoder + LSTM with soft attention, trained on the captions (greedy)"),
    CaptionerArch(
        name="vit-gpt2", system="vit_gpt2", options=(PretrainedOptions, TinyVitGpt2Options),
        job_class="captioners.hf:HFJob", captioner_class="captioners.hf:VitGpt2Captioner",
        config="configs/captioners/vit-gpt2-tiny.yaml",
        note="end to end: ViT encoder + GPT-2 decoder, trained on the captions (greedy)",
        model_type="vision-encoder-decoder", example="nlpconnect/vit-gpt2-image-captioning"),
    CaptionerArch(
        name="blip", system="blip", options=(PretrainedOptions,),
        job_class="captioners.hf:HFJob", captioner_class="captioners.hf:BlipCaptioner",
        config=None, note="end to end: BLIP (greedy)", needs_checkpoint=True,
        model_type="blip", example="Salesforce/blip-image-captioning-base"),
)}
Arch = Literal[tuple(ARCHS)]  # --arch's choices
SYSTEMS = {a.system: a for a in ARCHS.values()}  # the pipeline's system name -> its entry
MODEL_TYPES = {a.model_type: a.name for a in ARCHS.values() if a.model_type}  # config.json model_type -> arch


def arch_entry(name: str) -> CaptionerArch:
    """The entry of ``name``, or a ConfigError naming the architectures."""
    if name in ARCHS:
        return ARCHS[name]
    close = difflib.get_close_matches(str(name), ARCHS, n=1)
    raise ConfigError(f"arch {name!r} is not one of {', '.join(ARCHS)}"
                      + (f" (did you mean {close[0]}?)" if close else ""))


def foreign_options(arch: str, changed: Collection[str]) -> list[str]:
    """What is wrong with setting ``changed`` options for ``arch``: one problem per group of them that only other
    architectures read (``encoder applies to arch cnn-lstm only (arch is vit-gpt2); remove it``)."""
    readers: dict[str, list[str]] = {}  # an option that only some architectures read -> those architectures
    for entry in ARCHS.values():
        for k in entry.option_names:
            readers.setdefault(k, []).append(entry.name)
    groups: dict[tuple[str, ...], list[str]] = {}
    for k, names in readers.items():
        if k in changed and k not in ARCHS[arch].option_names:
            groups.setdefault(tuple(names), []).append(k)
    return [f"{', '.join(keys)} {'applies' if len(keys) == 1 else 'apply'} to arch {' and '.join(names)} only (arch "
            f"is {arch}); remove {'it' if len(keys) == 1 else 'them'}" for names, keys in groups.items()]
