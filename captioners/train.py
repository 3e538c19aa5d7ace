"""Train an end-to-end captioner (pixels -> caption) on a caption set in Karpathy-split JSON.

The offline default: Show, Attend and Tell (CNN+LSTM with soft attention) on the synthetic demo data, a random
MobileNetV2 trunk frozen and its features cached once, about 2 minutes on 2 CPU cores::

    python -m captioners.train --config configs/captioners/synthetic.yaml --out runs/captioners/cnn-lstm

Real data, torchvision's ImageNet weights (online once, or the file in torch's cache), and the transformers archs::

    python -m captioners.train --config configs/captioners/rsicd.yaml --captions /data/RSICD --out runs/cap/rsicd
    python -m captioners.train --config configs/captioners/flickr8k.yaml --captions /data/Flickr8k --out runs/cap/f8k
    python -m captioners.train --config configs/captioners/vit-gpt2-tiny.yaml --out runs/captioners/vit-gpt2
    python -m captioners.train --config configs/captioners/blip.yaml --checkpoint /models/blip-image-captioning-base \\
        --captions /data/RSICD --out runs/captioners/blip-rsicd

Every option, input and the output folder are checked before any work (one message, exit code 2, nothing written):
a caption set's blank captions (empty, or no letter or digit) are left out with a note on stderr, and a split left
without any caption is refused, as is a ``min_count`` that leaves the word vocabulary empty.

Training runs on accelerate, as segmentation.train does: mixed precision on CUDA (``--precision``), DDP under
``torchrun --nproc_per_node 2 -m captioners.train ...`` (``batch_size`` images per process), and after each epoch
the whole state (weights, optimiser, schedule, RNG states, the best epoch's weights) in ``out/last/``, from which
``--resume`` continues exactly (same options; a fresh run that fails before its first epoch leaves nothing). The
folder, its lock and the --resume rules are :mod:`segcap.training`'s, shared with the other trainings. The model
folder is written at the end, all at once (a temporary folder renamed onto ``--out``, the training state with the
folder it replaces): ``captioner.yaml`` (arch and options),
the weights (``model.pt`` + ``vocab.json``, or a transformers checkpoint with its tokenizer and image processor),
``metrics.json`` (losses per epoch, best epoch, times), ``history.csv`` and ``history.png`` (train and val loss).
Caption with ``python -m captioners.generate``; score with ``python -m evaluation.score``.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

from aerialdata.captionset import CaptionDataset, CaptionImage, screen_blank_captions
from captioners.base import CONFIG_FILE, Device, Job, resolve_device, write_config
from captioners.data import (
    empty_split_problem,
    missing_images_problem,
    open_caption_set,
    split_items,
    unreadable_images_problem,
)
from captioners.registry import (
    ARCHS,
    Arch,
    CnnLstmTrainOptions,
    PretrainedOptions,
    TinyVitGpt2Options,
    arch_entry,
    foreign_options,
)
from captioners.text import SPECIALS, Vocabulary, words
from segcap.atomic import atomic_path, write_json, write_text
from segcap.cli import run
from segcap.errors import ConfigError, SegcapError
from segcap.options import NonNegativeFloat, PositiveFloat, PositiveInt, checked, options_of, ungrouped
from segcap.progress import Progress, quiet_library_bars
from segcap.training import (
    STATE_DIR,
    OutputFolder,
    plain,
    read_state,
    save_state,
    saved_state_options,
    state_folder,
)

SPLIT = Literal["train", "val", "test", "restval"]
BEST_FILE = "best.pt"  # in last/: the weights of the best epoch so far (select best)
# options that may change between a run and its --resume (where it runs and what it shows, not what it learns); every
# other option must be the one the run started with (segmentation.train and llm.finetune keep the same rule)
RESUME_FREE = ("out", "device", "threads", "progress", "resume", "overwrite")


@checked
def main(
    captions: Path,
    out: Path,
    arch: Arch = "cnn-lstm",
    images: Path | None = None,
    train_split: SPLIT = "train",
    val_split: Literal["val", "test", "train", "restval", "none"] = "val",
    pretrained: PretrainedOptions = PretrainedOptions(),
    cnn_lstm: CnnLstmTrainOptions = CnnLstmTrainOptions(),
    freeze_encoder: bool | None = None,
    image_size: PositiveInt = 128,
    min_count: PositiveInt = 5,
    max_length: PositiveInt = 30,
    tiny_vit_gpt2: TinyVitGpt2Options = TinyVitGpt2Options(),
    epochs: PositiveInt = 20,
    batch_size: PositiveInt = 32,
    learning_rate: PositiveFloat | None = None,
    weight_decay: NonNegativeFloat = 0.0,
    lr_schedule: Literal["cosine", "constant"] = "cosine",
    grad_clip: NonNegativeFloat = 5.0,
    select: Literal["best", "last"] = "best",
    seed: int = 0,
    device: Device = "auto",
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto",
    threads: PositiveInt | None = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """Train an end-to-end image captioner (cnn-lstm, vit-gpt2 or blip) on a Karpathy-split caption set.

    The options only some architectures read are groups (captioners.registry: cnn_lstm, pretrained, tiny_vit_gpt2),
    given flat like the others: --encoder-stride 8, encoder_stride: 8, main(encoder_stride=8).

    Args:
        captions: caption set, Karpathy-split JSON (dataset_rsicd.json, dataset_flickr8k.json...) or its folder.
        out: model folder to write (captioner.yaml, weights, vocabulary or tokenizer, metrics.json, history.png).
        arch: cnn-lstm (Show, Attend and Tell), vit-gpt2 (ViT encoder + GPT-2 decoder) or blip.
        images: folder of the images, relative to the JSON's folder or absolute (default: the first of RSICD_images,
            Flicker8k_Dataset, Images, flickr30k_images, imgs, images there that holds them).
        train_split: caption-set split to train on.
        val_split: split for the val loss each epoch and the choice of the best epoch ("none" to skip).
        freeze_encoder: keep the image encoder fixed (cnn-lstm: its features computed once and cached, random
            BatchNorm statistics estimated on the training images first; vit-gpt2/blip: no gradients to the vision
            model). Default: true for cnn-lstm (training its backbone is slow on CPU), false for vit-gpt2 and blip.
        image_size: cnn-lstm and the tiny vit-gpt2: images are resized to this square size (a checkpoint brings
            its own).
        min_count: cnn-lstm and the tiny vit-gpt2: words seen fewer times in the training captions become <unk>.
        max_length: longest caption learnt and written, in words (cnn-lstm, tiny vit-gpt2) or tokens.
        epochs: passes over the training images (each with all its captions).
        batch_size: images per optimizer step (each with all its captions).
        learning_rate: AdamW learning rate (default: cnn-lstm 4e-3, tiny vit-gpt2 1e-3, vit-gpt2 checkpoint 5e-5,
            blip 2e-5).
        weight_decay: AdamW weight decay.
        lr_schedule: cosine (to zero over the run, after a short warm-up) or constant.
        grad_clip: clip the gradient norm to this (0: off).
        select: keep the weights of the epoch with the best val loss, or of the last epoch.
        seed: seed of the weights, the data order and dropout.
        device: auto (CUDA when there is one), cpu or cuda.
        precision: auto (bf16 on CUDA where supported, else fp16; fp32 on CPU), fp32, fp16 (CUDA) or bf16: mixed
            precision through accelerate.
        threads: torch CPU threads; empty: torch's default.
        progress: show progress (a bar on a terminal, one line per epoch in a log).
        resume: continue an interrupted run in out from its last epoch (out/last/; the same options).
        overwrite: replace an existing model folder written by captioners.train.
    """
    t0 = time.perf_counter()
    if freeze_encoder is None:
        freeze_encoder = arch_entry(arch).job.freeze_encoder
    opts = ungrouped(main, locals())  # every option, flat (what the jobs read and the record holds)

    # 1. setup: every problem at once, before any work or any file
    run_ = setup(opts)
    acc = make_accelerator(run_)
    try:
        # 2. output folder: one writer at a time; --overwrite or --resume (options checked); a fresh run that fails
        #    before its first epoch is saved removes what it wrote
        with run_.folder.hold(run_.options, acc.is_main_process, acc.wait_for_everyone,
                              has_checkpoint=lambda: state_folder(run_.out) is not None):
            # 3. build: the arch's job (captioners.registry.ARCHS): model, vocabulary or tokenizer, images ready
            job = build(run_, acc)
            # 4. fit: epochs over every training image with all its captions, val loss and the state each epoch
            fitted = fit(run_, acc, job)
            # 5. save: everything into a temporary folder, renamed onto --out at the end
            if acc.is_main_process:
                save(run_, acc, job, fitted, t0)
            acc.wait_for_everyone()
    finally:
        acc.end_training()
        AcceleratorState._reset_state(reset_partial_state=True)  # leaves no device set-up to a later caller
    return run_.out


# ------------------------------------------------------------------------------------------------ stages
@dataclass
class _Run:
    """One training run as :func:`setup` checked it: the options, the caption set and its splits, the folder."""

    opts: dict[str, Any]  # main's arguments
    options: dict[str, Any]  # the same, JSON-ready: recorded with the state, checked by --resume
    ds: CaptionDataset
    train_items: list[CaptionImage]
    val_items: list[CaptionImage]
    device: torch.device
    out: Path
    folder: OutputFolder


@dataclass
class _Fitted:
    """What :func:`fit` leaves: the history rows, the chosen epoch, the times."""

    history: list[dict[str, Any]]
    chosen: int
    learning_rate: float
    cache_seconds: float
    train_seconds: float
    parameters: int
    trainable_parameters: int


def setup(opts: dict[str, Any]) -> _Run:
    """Check the options, the caption set (splits, blank captions, images, vocabulary), the device and the output
    folder, all reported together; notes on stderr; nothing written."""
    captions, images, out = opts["captions"], opts["images"], Path(opts["out"])
    train_split, val_split = opts["train_split"], opts["val_split"]
    problems = _option_problems(opts)
    ds: CaptionDataset | None = None
    train_items: list[CaptionImage] = []
    val_items: list[CaptionImage] = []
    if not Path(captions).exists():
        problems.append(f"captions {captions} not found; pass a Karpathy-split JSON (dataset_rsicd.json) or its "
                        "folder, or make the synthetic set with `python -m synthetic.generate --out data/synthetic`")
    else:
        try:
            ds = open_caption_set(captions, images)
        except SegcapError as e:
            problems.append(str(e))
    notes: list[str] = []
    if ds is not None:
        train_items = split_items(ds, train_split)
        val_items = split_items(ds, val_split) if val_split != "none" else []
        if not train_items:
            problems.append(empty_split_problem(ds, train_split, "train_split"))
        if val_split != "none" and not val_items:
            problems.append(empty_split_problem(ds, val_split, "val_split"))
        # blank captions are left out (noted); a split left without any caption is refused
        for split, items in ((train_split, train_items), (val_split, val_items)):
            if not items:
                continue
            option = "--train-split" if split == train_split else "--val-split (or none)"
            kept, note, problem = screen_blank_captions(items, f"{ds.json_path}, {split} split", option)
            problems += [problem] if problem else []
            notes += [note] if note else []
            if split == train_split:
                train_items = kept
            else:
                val_items = kept
        splits = {train_split: train_items, val_split: val_items}
        problems += [p for p in (missing_images_problem(ds, splits), unreadable_images_problem(ds, splits)) if p]
        if train_items and ARCHS[opts["arch"]].job.builds_vocabulary(opts):
            problems += _vocabulary_problems(train_items, opts["min_count"])
    dev = torch.device("cpu")
    try:
        dev = resolve_device(opts["device"])
    except ConfigError as e:
        problems.extend(e.problems)
    if opts["precision"] == "fp16" and dev.type != "cuda":
        problems.append("--precision fp16 needs CUDA; use fp32 or bf16 on CPU (auto picks for the device)")
    if opts["resume"] and opts["overwrite"]:
        problems.append("--resume and --overwrite conflict: resume continues the run in --out, overwrite replaces it")
    options = {k: plain(v) for k, v in opts.items()}
    folder = _output_folder(out, opts["resume"], opts["overwrite"])
    problems += [f"out {out} is a file; pass a folder for the model"] if out.is_file() else folder.problems(options)
    if problems:
        raise ConfigError(problems)
    folder.refuse_clobber()
    for note in notes:
        print(note, file=sys.stderr, flush=True)
    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    quiet_library_bars()  # in a log, no bars for saving and loading weights
    return _Run(opts, options, ds, train_items, val_items, dev, out, folder)  # type: ignore[arg-type]  (ds is set)


def _output_folder(out: Path, resume: bool, overwrite: bool) -> OutputFolder:
    """The model folder under the one training protocol (:mod:`segcap.training`): the whole folder is this tool's
    (any file refuses a fresh run without --overwrite; --overwrite deletes only a model folder of captioners.train
    or an interrupted run's); --resume from last/ with the same options but :data:`RESUME_FREE`."""
    return OutputFolder(out, "model folder", "model folder", "captioners.train", resume, overwrite,
                        saved=saved_state_options, free=RESUME_FREE, trained_in=STATE_DIR,
                        marker=(CONFIG_FILE, STATE_DIR, f"{STATE_DIR}.tmp", f"{STATE_DIR}.old"),
                        accelerate_state=True)


def make_accelerator(r: _Run) -> Accelerator:
    """accelerate for this run: the device asked for (cpu=True makes torchrun's CPU processes a gloo group), mixed
    precision on CUDA (auto: bf16 where supported, else fp16; none on CPU)."""
    AcceleratorState._reset_state(reset_partial_state=True)  # each call picks its own device/precision
    precision, cuda = r.opts["precision"], r.device.type == "cuda"
    if precision == "fp32" or (precision == "auto" and not cuda):
        mixed = "no"
    elif precision == "auto":
        mixed = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    else:
        mixed = precision
    return Accelerator(cpu=not cuda, mixed_precision=mixed, step_scheduler_with_optimizer=False)


def build(r: _Run, acc: Accelerator) -> Job:
    """The architecture's job (model, vocabulary or tokenizer) on this process's device, its images ready."""
    o = r.opts
    torch.manual_seed(o["seed"])
    job = ARCHS[o["arch"]].job(o, r.train_items, acc.device)
    t_cache = time.perf_counter()
    job.prepare(r.ds, r.train_items, r.val_items, o["progress"] and acc.is_main_process)
    job.cache_seconds = time.perf_counter() - t_cache
    if acc.num_processes > 1:  # the same weights everywhere; dropout of its own in each process
        torch.manual_seed(o["seed"] + acc.process_index)
    return job


def fit(r: _Run, acc: Accelerator, job: Job) -> _Fitted:
    """AdamW and the schedule (transformers' cosine or constant, with warm-up) prepared by accelerate; with
    --resume, the state of out/last/; then the epochs still to do, the state saved after each."""
    o = r.opts
    params = [p for p in job.module.parameters() if p.requires_grad]
    n_train, n_all = sum(p.numel() for p in params), sum(p.numel() for p in job.module.parameters())
    if acc.is_main_process:
        n_caps = sum(len(it.sentences) for it in r.train_items)
        print(f"{o['arch']}: {len(r.train_items)} train images ({n_caps} captions), {len(r.val_items)} val images; "
              f"{n_train:,} trainable parameters of {n_all:,}; {job.describe()}; on {acc.device}"
              + (f" x{acc.num_processes}" if acc.num_processes > 1 else "")
              + (f", {acc.mixed_precision}" if acc.mixed_precision != "no" else "")
              + f", {torch.get_num_threads()} threads; images ready in {job.cache_seconds:.1f} s", flush=True)
    lr = o["learning_rate"] if o["learning_rate"] is not None else job.learning_rate(o)
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=o["weight_decay"])
    steps_per_epoch = math.ceil(len(r.train_items) / (o["batch_size"] * acc.num_processes))
    step = _Step(job)
    step, optimizer = acc.prepare(step, optimizer)
    scheduler = acc.prepare(_scheduler(optimizer, o["lr_schedule"], steps_per_epoch * o["epochs"]))
    loop = _Loop()
    if o["resume"]:
        acc.load_state(str(r.out / STATE_DIR))
        loop = _Loop.read(r.out / STATE_DIR)
        acc.print(f"resuming {r.out} after epoch {loop.epoch}", flush=True)
    t_train = time.perf_counter()
    _fit(r, acc, job, step, params, optimizer, scheduler, loop)
    if o["select"] == "best" and loop.best_state is not None:
        job.module.load_state_dict(loop.best_state)
    chosen = loop.best_epoch if o["select"] == "best" else o["epochs"]
    return _Fitted(loop.history, chosen, lr, job.cache_seconds,
                   loop.train_seconds + time.perf_counter() - t_train, n_all, n_train)


def save(r: _Run, acc: Accelerator, job: Job, f: _Fitted, t0: float) -> None:
    """Main process: the model folder written in a temporary folder and renamed onto --out (the training state
    goes with the folder it replaces)."""
    o, history, arch = r.opts, f.history, r.opts["arch"]
    metrics = {
        "arch": arch,
        "epochs": history,
        "selected": o["select"],
        "selected_epoch": f.chosen,
        "best_val_loss": min((row["val_loss"] for row in history if row["val_loss"] is not None), default=None),
        "loss": job.loss_name,
        "train_images": len(r.train_items),
        "train_captions": sum(len(it.sentences) for it in r.train_items),
        "val_images": len(r.val_items),
        "parameters": f.parameters,
        "trainable_parameters": f.trainable_parameters,
        "learning_rate": f.learning_rate,
        "cache_seconds": round(f.cache_seconds, 1),
        "train_seconds": round(f.train_seconds, 1),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "device": str(acc.device),
        "processes": acc.num_processes,
        "precision": acc.mixed_precision,
        "threads": torch.get_num_threads(),
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
        **job.figures(r.val_items),
    }
    trained_on = {"captions": str(r.ds.json_path), "images": str(r.ds.root / r.ds.images_dir),
                  "split": o["train_split"], "images_count": len(r.train_items), "val_split": o["val_split"]}
    with atomic_path(r.out) as tmp:
        tmp.mkdir(parents=True)
        job.save(tmp)
        write_json(tmp / "metrics.json", metrics)
        _write_history(tmp, history, f.chosen, f"{arch} training ({len(r.train_items)} images)", metrics["loss"])
        write_config(tmp, arch, job.options(), trained_on)
    last, best_val = history[-1], metrics["best_val_loss"]
    print(f"saved {r.out}: {o['epochs']} epochs in {f.train_seconds:.1f} s, final train loss {last['train_loss']:.4f}"
          + (f", best val loss {best_val:.4f}" if best_val is not None else "") + f"; weights of epoch {f.chosen}",
          flush=True)


# ------------------------------------------------------------------------------------------------ checks
def _option_problems(o: dict[str, Any]) -> list[str]:
    """The rules between options (each option's own bound is in its type, checked before ``main`` runs)."""
    out = []
    if o["train_split"] == o["val_split"]:
        out.append(f"train_split and val_split are both {o['train_split']!r}; the val loss needs held-out images "
                   "(or val_split: none)")
    if o["select"] == "best" and o["val_split"] == "none":
        out.append("select: best needs a val split to choose by; set val_split or select: last")
    arch, defaults = ARCHS[o["arch"]], _defaults()
    out += foreign_options(arch.name, [k for k in defaults if o[k] != defaults[k]])
    return out + arch.job.problems(o, defaults)


def _defaults() -> dict[str, Any]:
    return {n: o.default for n, o in options_of(main).items()}


def _vocabulary_problems(train: list[CaptionImage], min_count: int) -> list[str]:
    """A word vocabulary (cnn-lstm, tiny vit-gpt2) built from ``train`` that would hold no word: every caption the
    model writes would be empty."""
    if len(Vocabulary.build((s for it in train for s in it.sentences), min_count)) > len(SPECIALS):
        return []
    counts: dict[str, int] = {}
    for it in train:
        for s in it.sentences:
            for w in words(s):
                counts[w] = counts.get(w, 0) + 1
    top = max(counts.values(), default=0)
    return [f"min_count {min_count}: no word of the {sum(len(it.sentences) for it in train)} training captions is "
            f"seen that often (the most frequent, {top} times), so the vocabulary would hold no word and every "
            f"caption written would be empty; lower --min-count (e.g. {max(1, top)})"]


def _scheduler(optimizer, kind: str, total: int):
    """transformers' schedule: a linear warm-up over 5% of the steps (at most 100), then cosine to zero or
    constant."""
    warmup = min(100, max(1, total // 20))
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_cosine_schedule_with_warmup(optimizer, warmup, total)


class _Step(torch.nn.Module):
    """The job's loss as a module's forward, so that DDP (under torchrun) sees the forward pass and averages the
    gradients of the job's module, its only submodule."""

    def __init__(self, job: Job):
        super().__init__()
        self.job = job
        self.net = job.module

    def forward(self, split: str, batch: list[int]):
        return self.job.loss(split, batch)


@dataclass
class _Loop:
    """What the epochs carry: saved with accelerate's state in last/ (training.json, best.pt)."""

    epoch: int = 0  # epochs done
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    train_seconds: float = 0.0
    best_state: dict | None = None  # with select best: the weights of the best epoch (best.pt)

    def state(self) -> dict:
        return {"epoch": self.epoch, "history": self.history, "best_val_loss": self.best_val_loss,
                "best_epoch": self.best_epoch, "train_seconds": self.train_seconds}

    def write_best(self, folder: Path) -> None:
        if self.best_state is not None:
            torch.save(self.best_state, folder / BEST_FILE)

    @classmethod
    def read(cls, folder: Path) -> _Loop:
        state, _ = read_state(folder)
        best = folder / BEST_FILE
        return cls(**state, best_state=torch.load(best, map_location="cpu", weights_only=True)
                   if best.is_file() else None)


def _shares(order: np.ndarray, batch_size: int, acc: Accelerator) -> list[list[int]]:
    """This process's batches of an epoch: each optimizer step takes batch_size images per process from the
    shuffled ``order`` (the whole batch with one process); a short last step is split evenly, and a process left
    without an image repeats the epoch's first ones (every process of DDP must step)."""
    world, rank = acc.num_processes, acc.process_index
    per_step = batch_size * world
    out = []
    for i in range(0, len(order), per_step):
        step = order[i: i + per_step]
        if len(step) < world:
            step = np.concatenate([step, order[: world - len(step)]])
        out.append(np.array_split(step, world)[rank].tolist() if world > 1 else step.tolist())
    return out


def _fit(r: _Run, acc: Accelerator, job: Job, step: torch.nn.Module, params: list, optimizer, scheduler,
         loop: _Loop) -> None:
    """The epochs after ``loop.epoch`` over every training image with all its captions (shuffled with the seed:
    the same order in every process, each its share), the val loss each epoch, the best weights kept with
    ``select`` best; the whole state saved into out/last/ after each epoch."""
    o = r.opts
    epochs, batch_size, grad_clip = o["epochs"], o["batch_size"], o["grad_clip"]
    n_val = len(r.val_items)
    rng = np.random.default_rng(o["seed"])
    for _ in range(loop.epoch):  # the data order of the epochs done
        rng.permutation(len(r.train_items))
    for epoch in range(loop.epoch + 1, epochs + 1):
        t_epoch = time.perf_counter()
        batches = _shares(rng.permutation(len(r.train_items)), batch_size, acc)
        job.train(True)
        ce_sum, count = 0.0, 0
        with Progress(total=len(batches), desc=f"epoch {epoch}/{epochs}", unit="batch",
                      enabled=o["progress"] and acc.is_main_process) as bar:
            for batch in batches:
                with acc.autocast():
                    loss, ce, n = step("train", batch)
                optimizer.zero_grad(set_to_none=True)
                acc.backward(loss)
                if grad_clip > 0:
                    acc.clip_grad_norm_(params, grad_clip)
                optimizer.step()
                scheduler.step()
                ce_sum, count = ce_sum + float(ce), count + n
                bar.update()
                bar.set_postfix(**{"train loss": ce_sum / max(count, 1)})
            ce_sum, count = _summed(acc, ce_sum, count)
            row = {"epoch": epoch, "train_loss": round(ce_sum / max(count, 1), 5), "val_loss": None}
            if n_val:
                row["val_loss"] = round(_val_loss(job, n_val, batch_size, acc), 5)
                bar.set_postfix(**{"val loss": row["val_loss"]})
        row["seconds"] = round(time.perf_counter() - t_epoch, 2)
        loop.history.append(row)
        loop.epoch = epoch
        loop.train_seconds += time.perf_counter() - t_epoch
        if o["select"] == "best" and row["val_loss"] is not None and row["val_loss"] < loop.best_val_loss:
            loop.best_val_loss, loop.best_epoch = row["val_loss"], epoch
            loop.best_state = copy.deepcopy(job.module.state_dict())
        save_epoch(r, acc, loop)


def save_epoch(r: _Run, acc: Accelerator, loop: _Loop) -> None:
    """The whole state into out/last/ (written beside it, then swapped in): accelerate's (weights, optimiser,
    schedule, scaler, RNG states), the loop's, the best epoch's weights."""
    save_state(acc, r.out, loop.state(), r.options, extra=loop.write_best, safe_serialization=False)


def _summed(acc: Accelerator, total: float, count: int) -> tuple[float, int]:
    """(total, count) summed over the processes (as they are with one)."""
    if acc.num_processes == 1:
        return total, count
    t = acc.reduce(torch.tensor([total, float(count)], dtype=torch.float64, device=acc.device), reduction="sum")
    return float(t[0]), int(t[1])


@torch.no_grad()
def _val_loss(job: Job, n: int, batch_size: int, acc: Accelerator) -> float:
    """Cross-entropy per word (token) over the val images, each process on its contiguous share."""
    job.train(False)
    ce_sum, count = 0.0, 0
    with acc.split_between_processes(list(range(n))) as share:
        for i in range(0, len(share), batch_size):
            with acc.autocast():
                _, ce, k = job.loss("val", share[i: i + batch_size])
            ce_sum, count = ce_sum + float(ce), count + k
    ce_sum, count = _summed(acc, ce_sum, count)
    return ce_sum / max(count, 1)


def _write_history(folder: Path, history: list[dict], chosen: int, title: str, loss: str) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["epoch", "train_loss", "val_loss", "seconds"], lineterminator="\n")
    w.writeheader()
    w.writerows(history)
    write_text(folder / "history.csv", buf.getvalue())
    fig = Figure(figsize=(7, 4.2), dpi=120)
    ax = fig.subplots()
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_loss"] for r in history], color="tab:blue", marker=".", lw=1.4, label="train loss")
    val = [(r["epoch"], r["val_loss"]) for r in history if r["val_loss"] is not None]
    if val:
        ax.plot(*zip(*val, strict=True), color="tab:orange", marker="o", lw=1.4, label="val loss")
    ax.axvline(chosen, color="grey", ls="--", lw=1, label=f"weights kept (epoch {chosen})")
    ax.set_xlabel("epoch")
    ax.set_ylabel(loss + " (log scale)")
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(folder / "history.png") as tmp:
        fig.savefig(tmp, format="png")


if __name__ == "__main__":
    run(main)
