"""Train the UNet-MobileNet segmenter on labelled sources, each brought to the caption set's ground resolution.

    python -m segmentation.train --config configs/segmentation.yaml
    python -m segmentation.train --config configs/segmentation.yaml --data-root data/synthetic/drone \\
        --eval-captions data/synthetic/rsicd --out runs/segmentation
    python -m segmentation.train --config my_sources.yaml            # several sources, see below
    python -m segmentation.train --config configs/segmentation.yaml --resume          # continue from out/last/
    python -m segmentation.train --config configs/segmentation.yaml --tensorboard     # needs pip install -e '.[tensorboard]'
    tensorboard --logdir runs/segmentation/tensorboard
    torchrun --nproc_per_node 2 -m segmentation.train --config configs/segmentation.yaml   # several GPUs (or CPUs)

The training data comes in one of two forms:

* one drone-format set, ``data_root``, brought to the caption set's resolution by a hand-set ``target_scale`` (the
  demo's form, ``configs/segmentation.yaml``);
* several labelled sources, each declared with its ground resolution (metres per pixel) beside the caption set's; the
  scale of each is ``gsd / caption_gsd``, and nobody works it out by hand::

      sources:
        - {kind: loveda, root: /data/LoveDA}                         # gsd: the published 0.3 m
        - {kind: drone, root: /data/semantic_drone_dataset, gsd: 0.02}
        - {kind: folder, root: /data/mine, gsd: 0.5, class_map: configs/classes/maps/mine.yaml}
      caption_gsd: 0.5             # the caption set's metres per pixel
      data_root: null              # the other form's options stay empty
      target_scale: null

  Each source is validated on its published val split where it has one, else on ``val_fraction`` of its files; its
  pixels that it cannot label are IGNORE (255) in its masks, counted by no loss and no metric. The val mIoU is
  reported per source and overall, and each class is judged only on the sources that label it.

The output folder is the checkpoint folder (``load_segmenter(out)`` and ``segmentation.predict --checkpoint out``)::

    model.pt           weights of the epoch with the best validation mIoU
    config.yaml        architecture, class table, input scale, normalisation, the training options, and what it
                       was trained on: trained_on (source, root, gsd, synthetic, training images) and caption_gsd
    metrics.json       best_val_miou and best_epoch; the best epoch's pixel accuracy, mIoU, per-class IoU, confusion
                       matrix (val splits, per source too, and, with --eval-captions, the caption set's split); the
                       resolution check; history per epoch with wall-clock minutes
    last/              the last epoch's accelerate state (model, optimizer, scheduler, scaler, the RNG states of
                       every process) and training.json (epoch, step, history, options): what --resume continues
    tensorboard/       with --tensorboard: train loss, learning rate, val and caption-set mIoU per epoch
    history.png, confusion_val.png, confusion_captions.png, samples_val.png, samples_captions.png

Everything is checked before the folder is made: the options, the output folder, every image and mask the run will
read (from their headers: an empty file, a non-image, a colour mask, a mask of another size), the encoder weights
(loaded). A fresh run that still fails before its first epoch is saved removes what it wrote (config.yaml, and the
folder when it made it); a saved epoch is kept for --resume.

Devices, mixed precision (bf16 or fp16 on CUDA), DDP and the saved state are accelerate's. Under ``torchrun`` every
process trains on its share of each epoch, the metric counts are summed across processes, and only the main process
writes. ``batch_size`` is per process.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from torch.utils.data import DataLoader, Subset

from aerialdata.classes import ClassTable, load_class_table
from aerialdata.drone import DroneDataset
from aerialdata.sources import KINDS, LabelledSource, SourceSpec, open_source
from segcap import cli
from segcap.atomic import atomic_path, write_json, write_text
from segcap.errors import ConfigError, DataError
from segcap.options import (
    Factor,
    Group,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    UnitFraction,
    checked,
)
from segcap.progress import Progress, is_terminal
from segcap.training import (
    STATE_DIR,
    OutputFolder,
    plain,
    read_state,
    save_state,
    saved_state_options,
    state_folder,
    write_state,
)
from segcap.workers import WorkerInit
from segmentation.data import (
    CaptionMaskSet,
    EvalDataset,
    MixedCropDataset,
    ScaledCropDataset,
    crops_per_image_for,
    pad_collate,
    source_split,
    unreadable_pairs,
    unreadable_problem,
)
from segmentation.metrics import IGNORE_INDEX, ConfusionMatrix, block_share
from segmentation.model import (
    CONFIG_FORMAT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_MULTIPLE,
    Segmenter,
    build_model,
    default_architecture,
    encoder_weights_problems,
)
from segmentation.plots import plot_confusion, plot_history, plot_samples

TENSORBOARD_DIR = "tensorboard"
# options that may change between a run and its --resume (where it runs and what it shows, not what it learns); every
# other option must be the one the run started with (llm.finetune keeps the same rule)
RESUME_FREE = ("out", "device", "threads", "samples", "progress", "tensorboard", "cache_images", "resume", "overwrite")
LEGACY_DATA_ROOT = Path("data/synthetic/drone")  # the one-drone-set form's defaults (no sources given)
LEGACY_TARGET_SCALE = 0.25
RESOLVED_SHARE = 0.5  # a class with fewer of its pixels in 2x2 blocks than this is below the resolution


# ---------------------------------------------------------------- typed configuration
# The four groups of main's options, each option written once (name, type with bounds, default, help); the command
# line reads them as flat flags (segcap.options.Group), config.yaml records them flat.
@dataclass(frozen=True)
class DataConfig(Group):
    """Training data: where the images come from and how training samples are drawn.

    Two forms: ``sources`` with ``caption_gsd`` (``data_root`` and ``target_scale`` empty), or the one drone set
    ``data_root`` with ``target_scale`` (``sources`` and ``caption_gsd`` empty; :meth:`resolved` fills their
    defaults).

    Attributes:
        data_root: the one-drone-set form: a drone-format dataset (original_images/, label_images_semantic/);
            empty: data/synthetic/drone, or nothing when sources are given.
        classes: class table: seed10, aerial10 or a YAML path.
        eval_captions: caption-set root with label_images_semantic/ masks; its split's mIoU is reported per epoch.
        eval_split: split of the caption set to measure (test: the figure that matters).
        caption_scale: resize factor for caption-set images (1.0: they are at the target ground resolution).
        target_scale: the one-drone-set form: resize factor bringing the drone photos to the caption set's ground
            resolution (0.25: 4x smaller); empty: 0.25, or nothing when sources are given.
        scale_jitter: random scale factor drawn log-uniformly in [target/jitter, target*jitter]; 1: none.
        crop_size: training crop side after scaling (multiple of 32).
        crops_per_image: random crops drawn from each training image per epoch (with sources: per crop-sized area
            of the image at its training scale, at least one per image).
        cache_images: keep decoded training images in memory (faster epochs, more RAM).
        val_fraction: share of the files held out for validation (split by file, seeded), for a source without a
            published val split.
        limit: use only the first N files of the dataset (of each source).
        workers: DataLoader worker processes (0: load in the main process).
        sources: labelled sources to train on together (a list in the --config YAML), each a source's kind, its
            root folder, its gsd in metres per pixel (empty: the published or synthetic marker's value) and its
            class_map YAML (empty: the shipped map); needs caption_gsd, and data_root and target_scale left empty. Each image gives crops_per_image crops per crop-sized area at its training
            scale, so every source's pixels are drawn about equally often.
        caption_gsd: the caption set's ground resolution in metres per pixel; each source trains at scale
            (its gsd / caption_gsd), jittered by scale_jitter. Only with sources.
    """

    data_root: Path | None = None
    classes: str = "seed10"
    eval_captions: Path | None = None
    eval_split: Literal["train", "val", "test"] = "test"
    caption_scale: PositiveFloat = 1.0
    target_scale: PositiveFloat | None = None
    scale_jitter: Factor = 1.25
    crop_size: int = 160
    crops_per_image: PositiveInt = 1
    cache_images: bool = False
    val_fraction: UnitFraction = 0.2
    limit: int | None = None
    workers: NonNegativeInt = 0
    sources: list[SourceSpec] | None = None
    caption_gsd: PositiveFloat | None = None

    def resolved(self) -> DataConfig:
        """The options as the run uses them: the one-drone-set form's defaults filled in, paths as paths, the
        sources as :class:`SourceSpec` s (a tuple)."""
        legacy = self.sources is None
        return replace(
            self, data_root=Path(self.data_root) if self.data_root else LEGACY_DATA_ROOT if legacy else None,
            eval_captions=Path(self.eval_captions) if self.eval_captions else None,
            target_scale=(self.target_scale if self.target_scale is not None or not legacy
                          else LEGACY_TARGET_SCALE),
            sources=None if legacy else tuple(_source_spec(s, k) for k, s in enumerate(self.sources)))

    def problems(self) -> list[str]:
        out = self._form_problems()
        if self.crop_size < PAD_MULTIPLE or self.crop_size % PAD_MULTIPLE:
            c = self.crop_size
            out.append(f"--crop-size must be a multiple of 32 (got {c}); try {max(32, round(c / 32) * 32)}")
        if self.limit is not None and self.limit < (2 if self.val_fraction > 0 else 1):
            out.append(f"--limit {self.limit} leaves too few images: at least 2 with --val-fraction > 0, else 1")
        return out

    def _form_problems(self) -> list[str]:
        return form_problems(self.sources, self.caption_gsd, self.data_root, self.target_scale)


def form_problems(sources: list | tuple | None, caption_gsd: float | None, data_root: Path | None,
                  target_scale: float | None) -> list[str]:
    """What is wrong with the form of the training data: ``sources`` with ``caption_gsd``, or the one drone set
    (``data_root`` with ``target_scale``), each complete and never mixed. A caller that assembles options (the
    pipeline's segmentation stage) can check them with this before any work, as :func:`main` does; ``sources``
    items may be :class:`SourceSpec` or the mappings a config holds. Each value's own bounds (a gsd > 0) are
    :func:`main`'s types, checked before (:func:`segcap.options.check_options`)."""
    out: list[str] = []
    if sources is None:
        if caption_gsd is not None:
            out.append(f"caption_gsd {caption_gsd} goes with sources (each source's scale is its gsd / "
                       "caption_gsd); the one-drone-set form (data_root) takes target_scale instead. Either "
                       "list the drone set as sources: [{kind: drone, root: ..., gsd: <metres per pixel>}], or "
                       "clear caption_gsd (null)")
        return out
    mixed = [k for k, v in (("data_root", data_root), ("target_scale", target_scale)) if v is not None]
    if mixed:
        out.append(f"sources and {' and '.join(mixed)} are two forms of training data, mixed here: with sources, "
                   "each source's scale follows from its gsd and caption_gsd, so clear "
                   f"{' and '.join(mixed)} (null, e.g. `{mixed[0]}: null` in the YAML config), or drop sources "
                   "for the one-drone-set form (data_root with target_scale)")
    if not sources:
        out.append("sources is an empty list; list at least one labelled source ({kind: ..., root: ...}), or "
                   "clear it (null) for the one-drone-set form (data_root with target_scale)")
    if caption_gsd is None:
        out.append("sources need caption_gsd: the caption set's ground resolution in metres per pixel (1.0 for "
                   "the synthetic caption set), from which each source's training scale follows")
    seen: set[tuple[str, str]] = set()
    for k, item in enumerate(sources):
        try:
            spec = _source_spec(item, k)
        except ConfigError as e:
            out.extend(e.problems)
            continue
        key = (spec.kind, str(Path(spec.root).resolve()))
        if key in seen:
            out.append(f"sources[{k}]: {spec.kind} {spec.root} is listed twice; list each source once")
        seen.add(key)
    return out


@dataclass(frozen=True)
class ModelConfig(Group):
    """Model: smp.Unet(mobilenet_v2) with these decoder widths, from random, smp's ImageNet or local encoder weights.

    Attributes:
        encoder_weights: imagenet (smp's ImageNet weights: from the Hugging Face cache, or downloaded when online),
            a local encoder state-dict file (.pth or .safetensors, e.g. torchvision mobilenet_v2); empty: random init.
        decoder_channels: UNet decoder widths, 5 stages (smaller is faster on CPU).
        freeze_encoder: train the decoder only: the encoder keeps the weights it was loaded with (and its BatchNorm
            statistics). With few labelled images and ImageNet weights this keeps the encoder's features for the
            scene head (segmentation.scene): on UCM, 5 epochs on one LoveDA tile took a trainable ImageNet
            encoder's scene accuracy from 0.91 to 0.68 (val).
    """

    encoder_weights: Path | None = None
    decoder_channels: tuple[PositiveInt, ...] = (128, 64, 32, 16, 16)
    freeze_encoder: bool = False

    def problems(self) -> list[str]:
        out = []
        if self.freeze_encoder and self.encoder_weights is None:
            out.append("--freeze-encoder keeps the encoder's weights as loaded: give --encoder-weights (imagenet or a "
                       "file), or leave the encoder trainable (random weights frozen learn nothing)")
        if len(self.decoder_channels) != 5:
            out.append("--decoder-channels takes 5 positive numbers (one per decoder stage), e.g. 128 64 32 16 16 "
                       f"(got {' '.join(map(str, self.decoder_channels))})")
        out += encoder_weights_problems(self.encoder_weights)  # a missing file; imagenet neither cached nor online
        return out


@dataclass(frozen=True)
class OptimConfig(Group):
    """Optimisation: loss, optimiser and schedule.

    Attributes:
        batch_size: crops per optimizer step (per process under torchrun).
        epochs: passes over the training images.
        max_steps: stop after this many optimizer steps in all (smoke tests); empty: no limit.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        schedule: onecycle (warm-up then anneal) or cosine (anneal from lr).
        loss: ce (cross-entropy) or ce+dice (cross-entropy plus multiclass Dice).
    """

    batch_size: PositiveInt = 8
    epochs: PositiveInt = 12
    max_steps: PositiveInt | None = None
    lr: PositiveFloat = 3e-3
    weight_decay: NonNegativeFloat = 1e-4
    schedule: Literal["onecycle", "cosine"] = "onecycle"
    loss: Literal["ce", "ce+dice"] = "ce"


@dataclass(frozen=True)
class RunConfig(Group):
    """Run: output folder, devices, evaluation rhythm, logging.

    Attributes:
        out: output checkpoint folder.
        eval_every: evaluate (and keep the best weights) every N epochs and after the last; evaluation at full
            resolution can cost more than an epoch of training.
        seed: seed of the split, initialisation, data order and augmentation.
        device: auto (CUDA when available), cpu or cuda.
        precision: auto (bf16 on CUDA where supported, else fp16; fp32 on CPU), fp32, fp16 (CUDA) or bf16.
        threads: torch CPU threads; empty: torch's default (divided among processes under torchrun).
        samples: images in the image | truth | prediction figures.
        resume: continue from out/last/ (same options).
        overwrite: replace an existing checkpoint folder.
        progress: show progress bars.
        tensorboard: also log loss, learning rate and mIoU per epoch to out/tensorboard (needs the tensorboard extra).
    """

    out: Path = Path("runs/segmentation")
    eval_every: PositiveInt = 1
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    threads: PositiveInt | None = None
    samples: NonNegativeInt = 3
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    tensorboard: bool = False

    def problems(self) -> list[str]:
        out = []
        if self.resume and self.overwrite:
            out.append("--resume and --overwrite conflict: resume continues the run in --out, overwrite replaces it")
        cuda = torch.cuda.is_available()
        if self.device == "cuda" and not cuda:
            out.append("--device cuda asked for, but CUDA is not available; use --device cpu or auto")
        if self.precision == "fp16" and (self.device == "cpu" or not cuda):
            out.append("--precision fp16 needs CUDA; use fp32 or bf16 on CPU (auto picks for the device)")
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            out.append("--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]' "
                       "(or leave --tensorboard off)")
        return out

    @property
    def on_cpu(self) -> bool:
        return self.device == "cpu" or not torch.cuda.is_available()

    @property
    def mixed_precision(self) -> Literal["no", "fp16", "bf16"]:
        """accelerate's mixed_precision: auto is bf16 on CUDA where supported, fp16 on older GPUs, none on CPU."""
        if self.precision == "fp32" or (self.precision == "auto" and self.on_cpu):
            return "no"
        if self.precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return self.precision


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig
    model: ModelConfig
    optim: OptimConfig
    run: RunConfig

    def problems(self) -> list[str]:
        return self.data.problems() + self.model.problems() + self.run.problems()

    def options(self) -> dict:
        """The flat options of :func:`main`, JSON-ready (written to config.yaml and checked on --resume)."""
        flat = {**asdict(self.data), **asdict(self.model), **asdict(self.optim), **asdict(self.run)}
        return {k: plain(v) for k, v in flat.items()}

    @property
    def legacy(self) -> bool:
        """The one-drone-set form (data_root with target_scale), not sources."""
        return self.data.sources is None


# ---------------------------------------------------------------- state carried from epoch to epoch
@dataclass
class TrainingState:
    """What the loop carries between epochs, saved in ``last/training.json`` beside accelerate's state."""

    epoch: int = 0  # epochs done
    step: int = 0  # optimiser steps done
    train_minutes: float = 0.0  # in fit_epoch, all attempts together
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"miou": -1.0, "epoch": None, "val": None, "captions": None})

    @classmethod
    def read(cls, folder: Path) -> tuple[TrainingState, dict]:
        state, options = read_state(folder)
        return cls(**state), options

    def write(self, folder: Path, options: dict) -> None:
        write_state(folder, asdict(self), options)


@dataclass
class SourceRun:
    """One labelled source as this run uses it: its training scale, its train and val items, its val loader."""

    label: str  # its name in metrics.json and the epoch line: the kind (kind_2, ... when a kind repeats)
    source: LabelledSource
    scale: float  # training scale: the source's gsd / caption_gsd (or the legacy form's target_scale)
    train_idx: list[int]
    val_idx: list[int]
    val_split: Literal["published", "val_fraction"]  # where its val items come from
    crops_per_image: int
    val_ds: EvalDataset | None = None
    val_loader: DataLoader | None = None

    def trained_on(self) -> dict:
        """Its ``trained_on`` entry in config.yaml (images: the training images)."""
        s = self.source
        return {"source": s.name, "root": str(s.root), "gsd": s.gsd, "synthetic": bool(s.synthetic),
                "images": len(self.train_idx)}


@dataclass
class Data:
    """Class table, the training loader and the evaluation sets of this process."""

    table: ClassTable
    sources: list[SourceRun]
    train_ds: ScaledCropDataset | MixedCropDataset
    train_loader: DataLoader
    cap_ds: EvalDataset | None
    cap_loader: DataLoader | None

    @property
    def n_train(self) -> int:
        return sum(len(s.train_idx) for s in self.sources)

    @property
    def n_val(self) -> int:
        return sum(len(s.val_idx) for s in self.sources)

    @property
    def val_sets(self) -> list[SourceRun]:
        return [s for s in self.sources if s.val_ds is not None]


def resumable(out: Path) -> bool:
    """True when ``out`` holds a training state that ``--resume`` can continue from."""
    return state_folder(out) is not None


def output_folder(cfg: TrainConfig) -> OutputFolder:
    """The checkpoint folder under the one training protocol (:mod:`segcap.training`): an earlier run's outputs
    (model.pt, last/) kept unless --overwrite, other files left alone; --resume from last/ with the same options but
    :data:`RESUME_FREE`."""
    return OutputFolder(
        cfg.run.out, "checkpoint folder", "training output folder", "segmentation.train", cfg.run.resume,
        cfg.run.overwrite, saved=_saved_options, free=RESUME_FREE, trained_in=STATE_DIR,
        outputs=("model.pt", STATE_DIR, "last.pt"),
        clear=("model.pt", STATE_DIR, f"{STATE_DIR}.tmp", f"{STATE_DIR}.old", "last.pt", "metrics.json",
               TENSORBOARD_DIR),
        accelerate_state=True)


def _saved_options(out: Path) -> dict | str:
    found = saved_state_options(out)
    if isinstance(found, str) and (out / "last.pt").exists():
        found += " (last.pt is an earlier segcap's state, which cannot be resumed)"
    return found


# ---------------------------------------------------------------- entry point
@checked
def main(data: DataConfig = DataConfig(), model: ModelConfig = ModelConfig(), optim: OptimConfig = OptimConfig(),
         run: RunConfig = RunConfig()) -> dict:
    """Train smp.Unet(mobilenet_v2) on labelled sources grouped by a class table; write a checkpoint folder.

    The options are the fields of the four groups below, flat: main(epochs=2) from Python, --epochs 2 on the
    command line, epochs: 2 in a config (or optim: {epochs: 2}).
    """
    # 1. validate: one typed, frozen configuration; every problem reported at once, before any work
    cfg = TrainConfig(data=data.resolved(), model=model, optim=optim, run=run)
    validate(cfg)
    folder = output_folder(cfg)
    folder.check(cfg.options())  # writable, not clobbered, a --resume that can resume with these options
    # ... and the sources themselves: their files, and the ground resolution each one states
    table = load_class_table(cfg.data.classes)
    opened = open_sources(cfg, table)

    # 2. processes, device, mixed precision, seeds (accelerate)
    acc = make_accelerator(cfg)
    try:
        # 3. data: each source split (published val split, else by file) into scaled training crops and whole val
        #    images, every file's header read; the caption set for the figure that matters
        prepared = build_data(cfg, acc, table, opened)

        # 4. model (its encoder weights loaded: a file that does not fit stops here), loss
        net = build_network(cfg, prepared.table, acc)
        loss_fn = build_loss(cfg.optim.loss)

        # 5. output folder: one writer at a time; fresh, --overwrite or --resume (options checked), created only now;
        #    a fresh run that fails before its first epoch is saved removes what it wrote
        with folder.hold(cfg.options(), acc.is_main_process, acc.wait_for_everyone,
                         has_checkpoint=lambda: resumable(cfg.run.out)):
            # 6. optimiser, schedule, accelerate; the state of out/last/ with --resume
            job = setup(cfg, acc, net, prepared)
            # 7. epochs: fit, evaluate every eval_every epochs and after the last, save the state
            fit(cfg, acc, job, prepared, loss_fn)
            # 8. final metrics and figures of the best weights
            return save(cfg, acc, job, prepared)
    finally:
        acc.end_training()  # closes TensorBoard, destroys the process group under torchrun
        AcceleratorState._reset_state(reset_partial_state=True)  # leaves no device set-up to a later caller


@dataclass
class Job:
    """What the epochs work on: the prepared model, optimiser, schedule and loader, and the loop's state."""

    model: torch.nn.Module
    optim: torch.optim.Optimizer
    sched: object
    train_loader: DataLoader
    total_steps: int
    state: TrainingState
    checkpoint: dict
    resolution: dict


def setup(cfg: TrainConfig, acc: Accelerator, model: torch.nn.Module, data: Data) -> Job:
    """AdamW and the schedule over the steps of every epoch, all prepared by accelerate; with --resume, weights,
    optimiser, schedule, scaler and RNG states from out/last/; config.yaml and the start report."""
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.optim.lr,
                              weight_decay=cfg.optim.weight_decay)
    model, optim, train_loader = acc.prepare(model, optim, data.train_loader)
    total_steps = cfg.optim.epochs * max(1, len(train_loader))
    if cfg.optim.max_steps:
        total_steps = min(total_steps, cfg.optim.max_steps)
    sched = acc.prepare(build_schedule(cfg.optim, optim, total_steps))
    state = TrainingState()
    if cfg.run.resume:
        acc.load_state(str(cfg.run.out / STATE_DIR))
        state, _ = TrainingState.read(cfg.run.out / STATE_DIR)
        acc.print(f"resuming {cfg.run.out} after epoch {state.epoch} (step {state.step}, "
                  f"best val mIoU {state.best['miou']:.3f})")
    checkpoint = checkpoint_config(data.table, cfg, data)
    resolution_check = start_report(cfg, acc, data, checkpoint, len(train_loader), total_steps)
    return Job(model, optim, sched, train_loader, total_steps, state, checkpoint, resolution_check)


def fit(cfg: TrainConfig, acc: Accelerator, job: Job, data: Data, loss_fn) -> None:
    """The epochs still to do: fit, evaluate every eval_every epochs and after the last, save model.pt (best) and
    the state of out/last/."""
    state = job.state
    t0, minutes_before = time.perf_counter(), state.history[-1]["minutes"] if state.history else 0.0
    for epoch in range(state.epoch, cfg.optim.epochs):
        if state.step >= job.total_steps:
            break
        row = fit_epoch(cfg, acc, job.model, job.optim, job.sched, loss_fn, job.train_loader, data.train_ds, epoch,
                        state, job.total_steps)
        last = epoch + 1 == cfg.optim.epochs or state.step >= job.total_steps
        evaluated = last or (epoch + 1) % cfg.run.eval_every == 0
        val_cm = val_sources = cap_cm = None
        if evaluated:
            row, val_cm, val_sources, cap_cm = evaluate_epoch(cfg, acc, job.model, data, row)
        row["train_minutes"] = round(state.train_minutes, 4)
        row["minutes"] = round(minutes_before + (time.perf_counter() - t0) / 60, 4)
        improved = record_epoch(state, row, evaluated, val_cm, cap_cm, data.table, val_sources)
        log_epoch(cfg, acc, row, improved)
        save_epoch(cfg, acc, job.model, state, improved, final_metrics(cfg, acc, data, state, job.resolution))


def save(cfg: TrainConfig, acc: Accelerator, job: Job, data: Data) -> dict:
    """Main process: final metrics.json, the figures of the best weights, the closing line."""
    state = job.state
    metrics = final_metrics(cfg, acc, data, state, job.resolution)
    if acc.is_main_process:
        write_json(cfg.run.out / "metrics.json", metrics)
        _figures(cfg.run.out, data.table, job.checkpoint, state.best, state.history, data.val_sets, data.cap_ds,
                 cfg.run.samples, cfg.legacy)
        resolved = metrics["resolution"]["val_miou_resolved_classes"]
        print(f"best epoch {state.best['epoch']}: val mIoU {_fmt(state.best['val'])}"
              + (f" ({resolved:.3f} over the classes above the resolution)" if resolved is not None else "")
              + f", caption-set mIoU {_fmt(state.best['captions'])}; wrote {cfg.run.out}", flush=True)
    acc.wait_for_everyone()
    return metrics


# ---------------------------------------------------------------- stages
def validate(cfg: TrainConfig) -> None:
    """The rules between options (types, choices and bounds are :func:`main`'s signature, checked before it runs),
    all reported in one :class:`ConfigError`."""
    problems = cfg.problems()
    if problems:
        raise ConfigError(problems)


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """One accelerate set-up per call: devices (gloo for several CPU processes), mixed precision, seeds, threads."""
    AcceleratorState._reset_state(reset_partial_state=True)  # each call picks its own device/precision (as Trainer)
    acc = Accelerator(
        cpu=cfg.run.on_cpu,  # cpu=True is what makes torchrun's CPU processes a gloo group
        mixed_precision=cfg.run.mixed_precision,
        step_scheduler_with_optimizer=False,  # the schedule counts this process's steps, whatever the world size
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.run.seed,
                                                  non_blocking=not cfg.run.on_cpu),
        log_with="tensorboard" if cfg.run.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(cfg.run.out),
                                            logging_dir=str(cfg.run.out / TENSORBOARD_DIR)),
    )
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    elif acc.num_processes > 1 and acc.device.type == "cpu":
        local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    set_seed(cfg.run.seed, device_specific=True)  # seed + process index
    return acc


def open_sources(cfg: TrainConfig, table: ClassTable) -> list[tuple[str, LabelledSource]]:
    """The labelled sources, each with its label: the one drone set of the legacy form, or each of ``sources``
    through its reader. Every source must state its ground resolution (the legacy form's need not: its scale is
    given); those that do not are reported together in one :class:`ConfigError`."""
    d = cfg.data
    if cfg.legacy:
        return [("drone", DroneDataset(d.data_root, table))]
    opened, counts = [], {}
    for spec in d.sources:
        counts[spec.kind] = counts.get(spec.kind, 0) + 1
        label = spec.kind if counts[spec.kind] == 1 else f"{spec.kind}_{counts[spec.kind]}"
        opened.append((label, open_source(spec, table)))
    missing = [f"sources: {label} ({src.root}) states no ground resolution; give gsd (metres per pixel) in its "
               f"entry, e.g. {{kind: {src.name}, root: {src.root}, gsd: 0.05}}"
               for label, src in opened if src.gsd is None]
    if missing:
        raise ConfigError(missing)
    return opened


def build_data(cfg: TrainConfig, acc: Accelerator, table: ClassTable,
               opened: list[tuple[str, LabelledSource]]) -> Data:
    """Each source split (its published val split, else by file) into scaled training crops and whole val images,
    at its scale; the caption set's split.

    Each process evaluates its own share of the images (no padding duplicates, so the summed counts are exact).
    """
    d = cfg.data
    bs, eval_bs = cfg.optim.batch_size, max(1, cfg.optim.batch_size // 2)
    runs, parts, problems = [], [], []
    for k, (label, src) in enumerate(opened):
        scale = d.target_scale if cfg.legacy else src.gsd / d.caption_gsd
        train_idx, val_idx = source_split(src, d.val_fraction, cfg.run.seed, d.limit)
        published = src.splits is not None and "val" in src.splits
        if not train_idx or (d.val_fraction > 0 and not published and not val_idx):
            raise ConfigError(f"{src.root}: {len(train_idx) + len(val_idx)} usable image(s) in the {label} source; "
                              "need at least 2 to hold some out for validation (or --val-fraction 0)")
        # every file it will read, from its header: a bad file found in epoch 3 would waste the first two
        used = train_idx + val_idx
        bad = unreadable_problem(unreadable_pairs(src.image_paths, src.mask_paths, used), len(used),
                                 f"the {label} source {src.root}")
        problems += [bad] if bad else []
        cpi = d.crops_per_image if cfg.legacy else crops_per_image_for(src, train_idx, scale, d.crop_size,
                                                                       d.crops_per_image)
        parts.append(ScaledCropDataset(src, train_idx, d.crop_size, scale, d.scale_jitter, cpi,
                                       seed=cfg.run.seed + acc.process_index, cache=d.cache_images, stream=k))
        val_ds = EvalDataset(src, val_idx, scale) if val_idx else None
        runs.append(SourceRun(label=label, source=src, scale=scale, train_idx=train_idx, val_idx=val_idx,
                              val_split="published" if published else "val_fraction", crops_per_image=cpi,
                              val_ds=val_ds,
                              val_loader=_eval_loader(val_ds, acc, eval_bs, d.workers) if val_ds else None))
    train_ds = parts[0] if len(parts) == 1 else MixedCropDataset(parts)
    train_loader = DataLoader(
        train_ds, batch_size=bs, shuffle=True, drop_last=len(train_ds) >= bs * acc.num_processes,
        num_workers=d.workers, worker_init_fn=WorkerInit(_worker_init),  # workers end with this process
        generator=torch.Generator().manual_seed(cfg.run.seed), pin_memory=acc.device.type == "cuda", persistent_workers=d.workers > 0,
    )
    cap_ds = None
    if d.eval_captions:
        caps = CaptionMaskSet(d.eval_captions, table, split=d.eval_split)
        every = list(range(len(caps)))
        bad = unreadable_problem(unreadable_pairs(caps.image_paths, caps.mask_paths, every), len(every),
                                 f"the caption set {d.eval_captions}, {d.eval_split} split")
        problems += [bad] if bad else []
        cap_ds = EvalDataset(caps, every, d.caption_scale)
    if problems:
        raise DataError(problems[0] if len(problems) == 1 else
                        f"{len(problems)} problems with the data:\n" + "\n".join(f"  - {p}" for p in problems))
    return Data(
        table=table, sources=runs, train_ds=train_ds, train_loader=train_loader, cap_ds=cap_ds,
        cap_loader=_eval_loader(cap_ds, acc, max(eval_bs, 16), d.workers) if cap_ds else None,
    )


def build_network(cfg: TrainConfig, table: ClassTable, acc: Accelerator) -> torch.nn.Module:
    model = build_model({"decoder_channels": list(cfg.model.decoder_channels)}, table.num_classes,
                        cfg.model.encoder_weights)
    if cfg.model.freeze_encoder:
        model.encoder.requires_grad_(False)
    if acc.device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)  # faster convolutions on CPU
    return model


def build_loss(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """(N, C, H, W) float32 logits, (N, H, W) ids -> scalar loss; ``IGNORE_INDEX`` pixels (padding, and what a
    source cannot label) count nowhere, in either term. A batch with no labelled pixel at all gives loss 0 (a crop
    can fall entirely in a source's no-data), never NaN."""

    def ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # the mean over labelled pixels (what reduction="mean" gives, to the bit), but 0 rather than 0/0 when none
        total = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
        return total / (target != IGNORE_INDEX).sum().clamp(min=1)

    if kind == "ce":
        return ce
    import segmentation_models_pytorch as smp

    dice = smp.losses.DiceLoss("multiclass", ignore_index=IGNORE_INDEX)
    return lambda logits, target: ce(logits, target) + dice(logits, target)


def build_schedule(o: OptimConfig, optim: torch.optim.Optimizer, total_steps: int):
    if o.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=o.lr, total_steps=max(total_steps, 2),
                                                   pct_start=0.2, div_factor=10, final_div_factor=100)
    return torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(total_steps, 1), eta_min=o.lr / 100)


def start_report(cfg: TrainConfig, acc: Accelerator, data: Data, checkpoint: dict, steps_per_epoch: int,
                 total_steps: int) -> dict:
    """Main process: the resolution check (which classes the scale can still show), config.yaml, one summary line
    (and one per source with sources); the TensorBoard writer when asked for."""
    res: dict = {}
    if acc.is_main_process:
        res = {"val": val_resolution(cfg, data),
               "captions": resolution(data.cap_ds, data.table, f"caption set, {cfg.data.eval_split} split")}
        per_source = (res["val"] or {}).get("sources") or {"drone": res["val"] or {}}
        for label, r in per_source.items():
            below = r.get("below_resolution")
            if below:
                where = "the val masks" if cfg.legacy else f"the {label} val masks"
                print(f"note: at target scale {r['scale']:.4g}, {', '.join(below)} are mostly one pixel wide in "
                      f"{where} (under {RESOLVED_SHARE:.0%} of their pixels in 2x2 blocks): below the resolution, "
                      "their IoU stays near 0; metrics.json also gives mIoU without them")
        write_text(cfg.run.out / "config.yaml", yaml.safe_dump(checkpoint, sort_keys=False, allow_unicode=True))
        if not cfg.legacy:
            for s in data.sources:
                src = s.source
                print(f"source {s.label} ({src.root}): {src.gsd:g} m/px -> scale {s.scale:.4g} for the caption set's "
                      f"{cfg.data.caption_gsd:g} m/px; {len(s.train_idx)} train images x {s.crops_per_image} "
                      f"crops, {len(s.val_idx)} val ({'published split' if s.val_split == 'published' else 'by file'})"
                      + ("; synthetic" if src.synthetic else ""), flush=True)
        print(f"train {data.n_train} images ({len(data.train_ds)} crops/epoch), val {data.n_val}, "
              f"captions {len(data.cap_ds) if data.cap_ds else 0}; {steps_per_epoch} steps/epoch, "
              f"{total_steps} steps; device {acc.device} x{acc.num_processes}, precision {acc.mixed_precision}, "
              f"{torch.get_num_threads()} threads", flush=True)
    if cfg.run.tensorboard:
        acc.init_trackers("")  # writes to out/tensorboard/ directly (the run name is an empty subfolder)
    return res


def fit_epoch(cfg: TrainConfig, acc: Accelerator, model, optim, sched, loss_fn, loader,
              train_ds: ScaledCropDataset | MixedCropDataset, epoch: int, state: TrainingState,
              total_steps: int) -> dict:
    """One pass over this process's share of the crops (or until ``total_steps``); the mean loss of all processes."""
    model.train()
    if cfg.model.freeze_encoder:  # its BatchNorm statistics stay those it was loaded with
        acc.unwrap_model(model).encoder.eval()
    loader.set_epoch(epoch)  # the data order of this epoch (seed + epoch), the same in every process
    train_ds.set_epoch(epoch)  # the crops' scales and augmentation (seed + process + epoch)
    channels_last = acc.device.type == "cpu"
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), dtype=torch.float64, device=acc.device)
    batches = 0
    # a bar on a terminal only: in a log, the epoch's own line (log_epoch) is the one line it gets
    bar = Progress(total=len(loader), desc=f"epoch {epoch + 1}/{cfg.optim.epochs}", unit="batch",
                   enabled=cfg.run.progress and acc.is_main_process and is_terminal())
    with bar:
        for x, y in loader:  # already on the device
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            logits = model(x)  # under autocast with mixed precision; float32 out
            loss = loss_fn(logits.float(), y)
            optim.zero_grad(set_to_none=True)
            acc.backward(loss)
            optim.step()
            sched.step()
            state.step += 1
            batches += 1
            loss_sum += loss.detach()
            bar.update(1)
            if batches % 10 == 1 or state.step >= total_steps or batches == len(loader):
                bar.set_postfix(loss=round(loss.item(), 4), lr=f"{sched.get_last_lr()[0]:.2e}")
            if state.step >= total_steps:
                break
    totals = acc.reduce(torch.stack([loss_sum, torch.tensor(float(batches), dtype=torch.float64,
                                                            device=acc.device)]), reduction="sum").cpu()
    state.train_minutes += (time.perf_counter() - t0) / 60
    return {"epoch": epoch + 1, "step": state.step, "lr": sched.get_last_lr()[0],
            "train_loss": round(float(totals[0] / max(totals[1], 1)), 5)}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: DataLoader, num_classes: int,
             acc: Accelerator) -> tuple[ConfusionMatrix, float]:
    """Confusion matrix (:class:`ConfusionMatrix`, the code the tests check against scikit-learn) and mean pixel
    cross-entropy over a loader of whole images, summed over processes."""
    model.eval()
    cm = ConfusionMatrix(num_classes)
    loss = torch.zeros(2, dtype=torch.float64, device=acc.device)  # sum of pixel losses, pixels counted
    for x, y, _ in loader:
        x, y = x.to(acc.device, non_blocking=True), y.to(acc.device, non_blocking=True)
        with acc.autocast():
            logits = model(x).float()
        loss[0] += F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum")
        loss[1] += (y != IGNORE_INDEX).sum()
        cm.update(logits.argmax(1), y)
    cm.matrix = acc.reduce(torch.from_numpy(cm.matrix).to(acc.device), reduction="sum").cpu().numpy()
    loss = acc.reduce(loss, reduction="sum").cpu()
    return cm, float(loss[0] / max(loss[1], 1))


class JudgedMatrix(ConfusionMatrix):
    """The confusion matrices of one or several sources, summed, with each class judged only where it is labelled.

    A source cannot tell some classes apart (a car on a LoveDA road is labelled road): a prediction of such a class
    on that source is not counted as a false positive of that class (which might be right), but still as a miss of
    the labelled class. So a class's IoU is TP / (TP + FP on the sources that label it + FN), a source's mIoU is the
    mean over the classes it labels, and with one source that labels every class this is the plain IoU.
    """

    def __init__(self, cms: list[ConfusionMatrix], provides: list[tuple[int, ...]], num_classes: int):
        super().__init__(num_classes)
        self.unjudged = np.zeros(num_classes, dtype=np.int64)  # predictions of a class where it is not labelled
        for cm, labelled in zip(cms, provides, strict=True):
            self.merge(cm)
            blind = np.ones(num_classes, dtype=bool)
            blind[list(labelled)] = False
            self.unjudged += np.where(blind, cm.matrix.sum(0) - np.diag(cm.matrix), 0)

    def iou(self) -> np.ndarray:
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp - self.unjudged
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)


def evaluate_epoch(cfg: TrainConfig, acc: Accelerator, model, data: Data, row: dict
                   ) -> tuple[dict, JudgedMatrix | None, dict[str, JudgedMatrix] | None, ConfusionMatrix | None]:
    """mIoU on the val splits (overall and, with sources, per source) and on the caption set's split, with the
    unwrapped model (no DDP sync). Returns the row, the overall val matrix, the per-source ones, the caption set's."""
    net = acc.unwrap_model(model)
    n = data.table.num_classes
    val = per_source = cap_cm = None
    if data.val_sets:
        cms, losses, provides = [], [], []
        for s in data.val_sets:
            cm, loss = evaluate(net, s.val_loader, n, acc)
            cms.append(cm)
            losses.append(loss)
            provides.append(tuple(s.source.provides))
        val = JudgedMatrix(cms, provides, n)
        pixels = [cm.total for cm in cms]
        val_loss = losses[0] if len(cms) == 1 else sum(v * p for v, p in zip(losses, pixels, strict=True)) / max(
            sum(pixels), 1)
        row.update(val_loss=round(val_loss, 5), val_miou=round(val.miou, 5),
                   val_pixel_accuracy=round(val.pixel_accuracy, 5))
        if not cfg.legacy:
            per_source = {s.label: JudgedMatrix([cm], [p], n)
                          for s, cm, p in zip(data.val_sets, cms, provides, strict=True)}
            row["val_miou_by_source"] = {k: round(m.miou, 5) for k, m in per_source.items()}
    if data.cap_loader is not None:
        cap_cm, _ = evaluate(net, data.cap_loader, n, acc)
        row.update(caption_miou=round(cap_cm.miou, 5), caption_pixel_accuracy=round(cap_cm.pixel_accuracy, 5))
    return row, val, per_source, cap_cm


def record_epoch(state: TrainingState, row: dict, evaluated: bool, val_cm: ConfusionMatrix | None,
                 cap_cm: ConfusionMatrix | None, table: ClassTable,
                 val_sources: dict[str, ConfusionMatrix] | None = None) -> bool:
    """Append the epoch to the history; keep the figures of the best measured epoch (overall val mIoU, else
    caption-set mIoU, else train loss). Returns whether this epoch is the new best."""
    state.history.append(row)
    state.epoch = row["epoch"]
    score = row.get("val_miou", row.get("caption_miou", -row["train_loss"]))
    improved = evaluated and score > state.best["miou"]
    if improved:
        state.best = {"miou": score, "epoch": row["epoch"],
                      "val": val_cm.summary(table.names) if val_cm else None,
                      "captions": cap_cm.summary(table.names) if cap_cm else None}
        if val_sources is not None:
            state.best["val_sources"] = {k: m.summary(table.names) for k, m in val_sources.items()}
    return improved


def log_epoch(cfg: TrainConfig, acc: Accelerator, row: dict, improved: bool) -> None:
    """The epoch's summary line; its scalars to TensorBoard."""
    msg = f"epoch {row['epoch']}: train loss {row['train_loss']:.3f}"
    if "val_miou" in row:
        msg += f", val loss {row['val_loss']:.3f}, val mIoU {row['val_miou']:.3f}"
        by_source = row.get("val_miou_by_source")
        if by_source:
            msg += " (" + ", ".join(f"{k} {v:.3f}" for k, v in by_source.items()) + ")"
    if "caption_miou" in row:
        msg += f", caption-set {cfg.data.eval_split} mIoU {row['caption_miou']:.3f}"
    acc.print(msg + f" ({row['minutes']:.2f} min)" + (" *best" if improved else ""), flush=True)
    if cfg.run.tensorboard:
        names = {"train_loss": "train/loss", "lr": "train/lr", "val_loss": "val/loss", "val_miou": "val/miou",
                 "val_pixel_accuracy": "val/pixel_accuracy", "caption_miou": f"captions_{cfg.data.eval_split}/miou",
                 "caption_pixel_accuracy": f"captions_{cfg.data.eval_split}/pixel_accuracy"}
        scalars = {tag: row[k] for k, tag in names.items() if k in row}
        scalars.update({f"val_{k}/miou": v for k, v in (row.get("val_miou_by_source") or {}).items()})
        acc.log(scalars, step=row["epoch"])


def save_epoch(cfg: TrainConfig, acc: Accelerator, model, state: TrainingState, improved: bool,
               metrics: dict) -> None:
    """Best weights (model.pt), then the whole state into last/ (written beside it, then swapped in), metrics."""
    out = cfg.run.out
    if improved and acc.is_main_process:
        with atomic_path(out / "model.pt") as tmp:
            torch.save(acc.unwrap_model(model).state_dict(), tmp)
    save_state(acc, out, asdict(state), cfg.options())
    if acc.is_main_process:
        write_json(out / "metrics.json", metrics)
    acc.wait_for_everyone()


def final_metrics(cfg: TrainConfig, acc: Accelerator, data: Data, state: TrainingState, res: dict) -> dict:
    best = state.best
    metrics = {
        "best_val_miou": best["val"]["miou"] if best["val"] else None,
        "best_epoch": best["epoch"],
        "selected_by": "val mIoU" if data.n_val else ("caption-set mIoU" if data.cap_ds else "train loss"),
        "val": best["val"],
        "captions": None if best["captions"] is None else {
            **best["captions"], "split": cfg.data.eval_split, "images": len(data.cap_ds),
            "root": str(cfg.data.eval_captions)},
        "resolution": {
            "rule": f"a class is below the resolution when under {RESOLVED_SHARE:.0%} of its pixels lie in a 2x2 "
                    "block of the class at the measured scale (mostly one pixel wide): no segmenter can draw it there",
            "val": res.get("val"), "captions": res.get("captions"),
            "val_miou_resolved_classes": _resolved_miou(best["val"], res.get("val")),
            "caption_miou_resolved_classes": _resolved_miou(best["captions"], res.get("captions")),
        },
        "history": state.history,
        "train": {"images": data.n_train, "val_images": data.n_val, "epochs_done": len(state.history),
                  "device": str(acc.device), "world_size": acc.num_processes, "precision": acc.mixed_precision,
                  "threads": torch.get_num_threads(),
                  "minutes": state.history[-1]["minutes"] if state.history else 0.0,
                  "train_minutes": state.history[-1]["train_minutes"] if state.history else 0.0},
    }
    if not cfg.legacy:
        names = data.table.names
        best_sources = best.get("val_sources") or {}
        metrics["val_sources"] = {
            s.label: None if s.label not in best_sources else {
                **best_sources[s.label], "images": len(s.val_idx), "scale": s.scale, "split": s.val_split,
                "labelled_classes": [names[c] for c in s.source.provides]}
            for s in data.sources}
        metrics["train"]["caption_gsd"] = cfg.data.caption_gsd
        metrics["train"]["sources"] = [
            {"label": s.label, **s.trained_on(), "scale": s.scale, "crops_per_image": s.crops_per_image,
             "val_images": len(s.val_idx), "val_split": s.val_split} for s in data.sources]
    return metrics


# ---------------------------------------------------------------- helpers
def checkpoint_config(table: ClassTable, cfg: TrainConfig, data: Data) -> dict:
    """config.yaml of the checkpoint: what loading and predicting need, the options, and what it was trained on
    (``trained_on``, ``caption_gsd``: read by :mod:`segmentation.provenance`)."""
    arch = {**default_architecture(), "decoder_channels": list(cfg.model.decoder_channels),
            "classes": table.num_classes}
    if cfg.legacy:
        scales = {"drone_scale": cfg.data.target_scale}
        note = ("predict at scale 1.0 on images at the caption set's ground resolution; at drone_scale on photos of "
                "the drone set itself")
    else:
        drone = [s.scale for s in data.sources if s.source.name == "drone"]
        scales = {**({"drone_scale": drone[0]} if drone else {}),
                  "source_scales": {s.label: s.scale for s in data.sources}}
        note = (f"predict at scale 1.0 on images at the caption set's ground resolution ({cfg.data.caption_gsd:g} m "
                "per pixel); on an image of another ground resolution at (its metres per pixel / caption_gsd)")
    return {
        "format": CONFIG_FORMAT,
        "architecture": arch,
        "classes": table.to_dict(),
        "input": {
            **scales,
            "caption_scale": cfg.data.caption_scale,
            "crop_size": cfg.data.crop_size,
            "pad_multiple": PAD_MULTIPLE,
            "tile_size": 1024,
            "note": note,
        },
        "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "pixel_range": 255,
                          "channels": "RGB"},
        "trained_on": [s.trained_on() for s in data.sources],
        "caption_gsd": cfg.data.caption_gsd,  # None in the legacy form: target_scale was given by hand
        "training": cfg.options(),
    }


def _eval_loader(ds: EvalDataset, acc: Accelerator, batch_size: int, workers: int) -> DataLoader:
    with acc.split_between_processes(list(range(len(ds)))) as share:  # contiguous shares, no padding
        subset = Subset(ds, share)
    return DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=pad_collate,
                      pin_memory=acc.device.type == "cuda", worker_init_fn=WorkerInit() if workers else None)


def _worker_init(worker_id: int) -> None:
    """Each DataLoader worker draws its own crops: the training set's random streams from torch's worker seed."""
    seed = torch.initial_seed() % 2**32
    ds = torch.utils.data.get_worker_info().dataset
    if hasattr(ds, "reseed"):
        ds.reseed(seed)
    np.random.seed(seed)


def _source_spec(value, k: int) -> SourceSpec:
    """A ``sources`` item as a :class:`SourceSpec`: as given, or from the mapping a config or the CLI gives."""
    if isinstance(value, SourceSpec):
        return value
    raw = value.as_dict() if hasattr(value, "as_dict") else value  # jsonargparse's Namespace, from the CLI
    if not isinstance(raw, dict):
        raise ConfigError(f"sources[{k}]: {value!r} is not a source; write {{kind: {'|'.join(KINDS)}, "
                          "root: <folder>, gsd: <metres per pixel>, class_map: <YAML>}")
    fields = {"kind", "root", "gsd", "class_map"}
    unknown = sorted(set(raw) - fields)
    if unknown or "kind" not in raw or "root" not in raw:
        raise ConfigError(f"sources[{k}]: {dict(raw)!r} needs kind and root, and takes only "
                          f"{', '.join(sorted(fields))}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return SourceSpec(kind=raw["kind"], root=Path(raw["root"]), gsd=raw.get("gsd"),
                      class_map=Path(raw["class_map"]) if raw.get("class_map") else None)


def _fmt(summary: dict | None) -> str:
    return "n/a" if not summary or summary["miou"] is None else f"{summary['miou']:.3f}"


def resolution(ds, table: ClassTable, where: str) -> dict | None:
    """Per class, the share of its pixels in same-class 2x2 blocks in ``ds``'s masks at its scale."""
    if ds is None:
        return None
    share = block_share((ds.raw(k)[1] for k in range(len(ds))), table.num_classes)
    return {"where": where, "scale": ds.scale,
            "block_share": {n: round(float(v), 4) if np.isfinite(v) else None
                            for n, v in zip(table.names, share, strict=True)},
            "below_resolution": [n for n, v in zip(table.names, share, strict=True)
                                 if np.isfinite(v) and v < RESOLVED_SHARE]}


def val_resolution(cfg: TrainConfig, data: Data) -> dict | None:
    """The resolution check of the val masks: the legacy form's one drone val split as it always was; with sources,
    each source's at its scale, and overall the classes below the resolution in every source that holds them."""
    sets = data.val_sets
    if not sets:
        return None
    if cfg.legacy:
        return resolution(sets[0].val_ds, data.table, "drone val split")
    per = {s.label: resolution(s.val_ds, data.table, f"{s.label} val split") for s in sets}
    measured = [{n for n, v in r["block_share"].items() if v is not None} for r in per.values()]
    below = [n for n in data.table.names if any(n in m for m in measured)
             and all(n in r["below_resolution"] for r, m in zip(per.values(), measured, strict=True) if n in m)]
    return {"where": "val splits of " + ", ".join(per), "scale": {s.label: s.scale for s in sets},
            "below_resolution": below, "sources": per}


def _resolved_miou(summary: dict | None, res: dict | None) -> float | None:
    """Mean IoU over the measured classes that are not below the resolution."""
    if not summary or not res:
        return None
    ious = [v for n, v in summary["per_class_iou"].items() if v is not None and n not in res["below_resolution"]]
    return round(float(np.mean(ious)), 5) if ious else None


def _figures(out: Path, table: ClassTable, cfg: dict, best: dict, history: list[dict], val_sets: list[SourceRun],
             cap_ds, samples: int, legacy: bool = True) -> None:
    if not history:
        return
    plot_history(history, out / "history.png")
    val_name = "drone val split" if legacy else "val splits"
    for key, name in (("val", val_name), ("captions", "caption set")):
        if best[key]:
            plot_confusion(np.array(best[key]["confusion_matrix_normalised"]), table.names,
                           out / f"confusion_{key}.png", f"{name}, epoch {best['epoch']} (rows normalised)")
    model = build_model(cfg["architecture"], table.num_classes)
    model.load_state_dict(torch.load(out / "model.pt", map_location="cpu", weights_only=True))
    seg = Segmenter(model, table, cfg)
    # (label, dataset, k): the val items of every source in turn, then the caption set's
    val_items = [("" if legacy else f"{s.label}/", s.val_ds, k) for s in val_sets for k in range(len(s.val_ds))]
    cap_items = [("", cap_ds, k) for k in range(len(cap_ds))] if cap_ds is not None else []
    for key, items in (("val", val_items), ("captions", cap_items)):
        if samples <= 0 or not items:
            continue
        rows = []
        for j in sorted({int(v) for v in np.linspace(0, len(items) - 1, min(samples, len(items)))}):  # spread out
            prefix, ds, k = items[j]
            image, truth = ds.raw(k)
            pred = seg.predict([image])[0]
            rows.append((prefix + ds.source.stems[ds.indices[k]], image, truth, pred))
        title = "caption set" if key == "captions" else "drone val" if legacy else "val"
        plot_samples(rows, table.names, table.colors, out / f"samples_{key}.png", f"{title}: image | truth | prediction")


if __name__ == "__main__":
    cli.run(main)
