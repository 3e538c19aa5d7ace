"""Train the UNet-MobileNet segmenter on a drone-format dataset, with scale augmentation towards the caption set.

    python -m segmentation.train --config configs/segmentation.yaml
    python -m segmentation.train --config configs/segmentation.yaml --data-root data/synthetic/drone \\
        --eval-captions data/synthetic/rsicd --out runs/segmentation
    python -m segmentation.train --config configs/segmentation.yaml --resume          # continue from last.pt
    torchrun --nproc_per_node 2 -m segmentation.train --config configs/segmentation.yaml   # several GPUs (or CPUs)

The output folder is the checkpoint folder (``load_segmenter(out)`` and ``segmentation.predict --checkpoint out``)::

    model.pt           weights of the epoch with the best validation mIoU
    config.yaml        architecture, class table, input scale, normalisation, the training options
    metrics.json       best epoch's pixel accuracy, mIoU, per-class IoU, confusion matrix (drone val split and, with
                       --eval-captions, the caption set's test split); history per epoch with wall-clock minutes
    last.pt            model + optimizer + scheduler state of the last epoch (for --resume)
    history.png, confusion_val.png, confusion_captions.png, samples_val.png, samples_captions.png

Under ``torchrun`` every process trains on its share of each epoch (DistributedSampler), metric counts are summed
across processes, and only rank 0 writes. ``batch_size`` is per process.
"""

from __future__ import annotations

import os
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from aerialdata.classes import ClassTable, load_class_table
from aerialdata.drone import DroneDataset
from segcap.atomic import atomic_path, write_json, write_text
from segcap.cli import run
from segcap.errors import ConfigError, OutputExistsError
from segmentation.data import CaptionMaskSet, EvalDataset, ScaledCropDataset, pad_collate, split_by_file
from segmentation.metrics import IGNORE_INDEX, ConfusionMatrix, block_share
from segmentation.model import (
    CONFIG_FORMAT,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PAD_MULTIPLE,
    Segmenter,
    build_model,
    default_architecture,
)

# options that must not change between a run and its --resume
RESUME_FIXED = ("classes", "decoder_channels", "epochs", "max_steps", "schedule", "batch_size", "crops_per_image",
                "val_fraction", "seed", "limit")


# ---------------------------------------------------------------- distributed
class Dist:
    """Rank / world size from torchrun's environment; a no-op for a single process."""

    def __init__(self, device: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("--device cuda asked for, but CUDA is not available; use --device cpu or auto")
        if device == "cuda" and self.world > 1:
            device = f"cuda:{self.local_rank}"
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            t = t.to(self.device if self.device.type == "cuda" else "cpu")
            dist.all_reduce(t)
        return t

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    seed = torch.initial_seed() % 2**32
    ds = info.dataset
    if hasattr(ds, "_rng"):
        ds._rng.seed(seed)
    if hasattr(ds, "augment"):
        ds.augment.set_random_seed(seed)
    np.random.seed(seed)


# ---------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, loader, num_classes: int, d: Dist, amp: bool) -> tuple[ConfusionMatrix, float]:
    """Confusion matrix and mean cross-entropy over a loader of whole images, summed over processes."""
    model.eval()
    cm = torch.zeros(num_classes * num_classes, dtype=torch.float64)
    loss_sum = torch.zeros(2, dtype=torch.float64)  # sum of pixel losses, pixel count
    for x, y, _ in loader:
        x, y = x.to(d.device), y.to(d.device)
        with _autocast(d, amp):
            logits = model(x).float()
        loss_sum[0] += F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX, reduction="sum").item()
        keep = y != IGNORE_INDEX
        loss_sum[1] += keep.sum().item()
        t, p = y[keep], logits.argmax(1)[keep]
        cm += torch.bincount(t * num_classes + p, minlength=num_classes**2).cpu().double()
    cm, loss_sum = d.sum(cm).cpu(), d.sum(loss_sum).cpu()
    out = ConfusionMatrix(num_classes)
    out.matrix = cm.round().long().numpy().reshape(num_classes, num_classes)
    return out, float(loss_sum[0] / max(loss_sum[1], 1))


def _autocast(d: Dist, amp: bool):
    return torch.autocast("cuda", dtype=torch.float16) if amp and d.device.type == "cuda" else nullcontext()


def _eval_loader(ds: EvalDataset, d: Dist, batch_size: int, num_workers: int) -> DataLoader:
    """Each process evaluates every world-th item (no padding duplicates, so counts sum exactly)."""
    share = torch.utils.data.Subset(ds, list(range(d.rank, len(ds), d.world)))
    return DataLoader(share, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=pad_collate)


# ---------------------------------------------------------------- checkpoint folder
def checkpoint_config(table: ClassTable, opts: dict) -> dict:
    arch = {**default_architecture(), "decoder_channels": list(opts["decoder_channels"]), "classes": table.num_classes}
    return {
        "format": CONFIG_FORMAT,
        "architecture": arch,
        "classes": table.to_dict(),
        "input": {
            "drone_scale": opts["target_scale"],
            "caption_scale": opts["caption_scale"],
            "crop_size": opts["crop_size"],
            "pad_multiple": PAD_MULTIPLE,
            "tile_size": 1024,
            "note": "predict at scale 1.0 on images at the caption set's ground resolution; at drone_scale on "
                    "photos of the drone set itself",
        },
        "normalisation": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "pixel_range": 255,
                          "channels": "RGB"},
        "training": {k: (str(v) if isinstance(v, Path) else v) for k, v in opts.items()},
    }


def _validate(opts: dict) -> None:
    problems = []
    if opts["target_scale"] <= 0:
        problems.append(f"--target-scale must be positive (got {opts['target_scale']})")
    if opts["crop_size"] < 32 or opts["crop_size"] % PAD_MULTIPLE:
        c = opts["crop_size"]
        problems.append(f"--crop-size must be a multiple of 32 (got {c}); try {max(32, round(c / 32) * 32)}")
    for k in ("batch_size", "epochs", "crops_per_image", "eval_every"):
        if opts[k] < 1:
            problems.append(f"--{k.replace('_', '-')} must be at least 1 (got {opts[k]})")
    if opts["max_steps"] is not None and opts["max_steps"] < 1:
        problems.append("--max-steps must be at least 1")
    if not 0 <= opts["val_fraction"] < 1:
        problems.append(f"--val-fraction must be in [0, 1) (got {opts['val_fraction']})")
    if opts["lr"] <= 0:
        problems.append("--lr must be positive")
    if opts["scale_jitter"] < 1:
        problems.append("--scale-jitter is a factor >= 1 (1: no jitter)")
    if len(opts["decoder_channels"]) != 5:
        problems.append("--decoder-channels takes 5 numbers (one per decoder stage), e.g. 128 64 32 16 16")
    if problems:
        raise ConfigError(problems)


def main(
    data_root: Path = Path("data/synthetic/drone"),
    out: Path = Path("runs/segmentation"),
    classes: str = "seed10",
    eval_captions: Path | None = None,
    eval_split: str = "test",
    caption_scale: float = 1.0,
    encoder_weights: Path | None = None,
    decoder_channels: list[int] = (128, 64, 32, 16, 16),
    target_scale: float = 0.25,
    scale_jitter: float = 1.25,
    crop_size: int = 160,
    crops_per_image: int = 1,
    cache_images: bool = False,
    batch_size: int = 8,
    epochs: int = 12,
    max_steps: int | None = None,
    eval_every: int = 1,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    schedule: Literal["onecycle", "cosine"] = "onecycle",
    loss: Literal["ce", "ce+dice"] = "ce",
    val_fraction: float = 0.2,
    limit: int | None = None,
    seed: int = 0,
    num_workers: int = 0,
    device: str = "auto",
    amp: bool = True,
    threads: int | None = None,
    samples: int = 3,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Train smp.Unet(mobilenet_v2) on drone-format images grouped by a class table; write a checkpoint folder.

    Args:
        data_root: drone-format dataset (original_images/, label_images_semantic/).
        out: output checkpoint folder.
        classes: class table: seed10, aerial10 or a YAML path.
        eval_captions: caption-set root with label_images_semantic/ masks; its split's mIoU is reported per epoch.
        eval_split: split of the caption set to measure (test: the figure that matters).
        caption_scale: resize factor for caption-set images (1.0: they are at the target ground resolution).
        encoder_weights: local encoder state-dict file (e.g. torchvision mobilenet_v2); empty: random init.
        decoder_channels: UNet decoder widths, 5 stages (smaller is faster on CPU).
        target_scale: resize factor bringing drone photos to the caption set's ground resolution (0.25: 4x smaller).
        scale_jitter: random scale factor drawn log-uniformly in [target/jitter, target*jitter].
        crop_size: training crop side after scaling (multiple of 32).
        crops_per_image: random crops drawn from each training image per epoch.
        cache_images: keep decoded training images in memory (faster epochs, more RAM).
        batch_size: crops per optimizer step (per process under torchrun).
        epochs: passes over the training images.
        max_steps: stop after this many optimizer steps in all (smoke tests); empty: no limit.
        eval_every: evaluate (and keep the best weights) every N epochs and after the last; evaluation at full
            resolution can cost more than an epoch of training.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        schedule: onecycle (warm-up then anneal) or cosine (anneal from lr).
        loss: ce (cross-entropy) or ce+dice (cross-entropy plus multiclass Dice).
        val_fraction: share of the files held out for validation (split by file, seeded).
        limit: use only the first N files of the dataset.
        seed: seed of the split, initialisation and augmentation.
        num_workers: DataLoader worker processes.
        device: auto, cpu, cuda.
        amp: mixed precision (float16 autocast) on CUDA; ignored on CPU.
        threads: torch CPU threads; empty: torch's default (divided among processes under torchrun).
        samples: images in the image | truth | prediction figures.
        resume: continue from out/last.pt (same options).
        overwrite: replace an existing checkpoint folder.
        progress: show progress bars.
    """
    opts = {k: v for k, v in locals().items()}
    opts["decoder_channels"] = [int(c) for c in decoder_channels]
    for k in ("data_root", "out", "eval_captions", "encoder_weights"):
        opts[k] = str(opts[k]) if opts[k] is not None else None
    _validate(opts)

    # ---- 1. processes, seeds, threads
    d = Dist(device)
    if threads:
        torch.set_num_threads(threads)
    elif d.world > 1 and d.device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", d.world))))
    seed_everything(seed + d.rank)
    try:
        return _train(opts, d, bars=progress and d.main)
    finally:
        d.close()


def _train(opts: dict, d: Dist, bars: bool) -> dict:
    out = Path(opts["out"])
    seed = opts["seed"]

    # ---- 2. output folder: fresh, overwrite or resume
    last_path = out / "last.pt"
    if opts["resume"]:
        if not last_path.is_file():
            raise ConfigError(f"--resume: nothing to resume in {out} (no last.pt); run without --resume to start")
    elif (out / "model.pt").exists() or last_path.exists():
        if not opts["overwrite"]:
            raise OutputExistsError(out, "training output folder")

    # ---- 3. data: drone set split by file, caption set for the figure that matters
    table = load_class_table(opts["classes"])
    drone = DroneDataset(opts["data_root"], table)
    stems = drone.stems[: opts["limit"]] if opts["limit"] else drone.stems
    if len(stems) < 2 and opts["val_fraction"] > 0:
        raise ConfigError(f"{opts['data_root']}: {len(stems)} image(s); need at least 2 to hold some out for validation")
    drone = DroneDataset(opts["data_root"], table, stems=stems)
    train_idx, val_idx = split_by_file(drone.stems, opts["val_fraction"], seed)
    train_ds = ScaledCropDataset(drone, train_idx, opts["crop_size"], opts["target_scale"], opts["scale_jitter"],
                                 opts["crops_per_image"], seed=seed + d.rank, cache=opts["cache_images"])
    sampler = DistributedSampler(train_ds, d.world, d.rank, shuffle=True, seed=seed) if d.world > 1 else None
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        train_ds, batch_size=opts["batch_size"], shuffle=sampler is None, sampler=sampler, drop_last=len(train_ds) >=
        opts["batch_size"] * d.world, num_workers=opts["num_workers"], worker_init_fn=_worker_init, generator=gen,
        pin_memory=d.device.type == "cuda", persistent_workers=opts["num_workers"] > 0,
    )
    eval_bs = max(1, opts["batch_size"] // 2)
    val_ds = EvalDataset(drone, val_idx, opts["target_scale"]) if val_idx else None
    val_loader = _eval_loader(val_ds, d, eval_bs, opts["num_workers"]) if val_ds else None
    cap_ds = None
    if opts["eval_captions"]:
        caps = CaptionMaskSet(opts["eval_captions"], table, split=opts["eval_split"])
        cap_ds = EvalDataset(caps, list(range(len(caps))), opts["caption_scale"])
        cap_loader = _eval_loader(cap_ds, d, max(eval_bs, 16), opts["num_workers"])

    # ---- 4. model, loss, optimizer, schedule
    model = build_model({"decoder_channels": opts["decoder_channels"]}, table.num_classes,
                        opts["encoder_weights"]).to(d.device)
    if d.device.type == "cpu":
        model = model.to(memory_format=torch.channels_last)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[d.device] if d.device.type == "cuda" else None) \
        if d.world > 1 else model
    dice = None
    if opts["loss"] == "ce+dice":
        import segmentation_models_pytorch as smp

        dice = smp.losses.DiceLoss("multiclass", ignore_index=IGNORE_INDEX)
    steps_per_epoch = max(1, len(train_loader))
    total_steps = opts["epochs"] * steps_per_epoch
    if opts["max_steps"]:
        total_steps = min(total_steps, opts["max_steps"])
    optim = torch.optim.AdamW(model.parameters(), lr=opts["lr"], weight_decay=opts["weight_decay"])
    if opts["schedule"] == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(optim, max_lr=opts["lr"], total_steps=max(total_steps, 2),
                                                    pct_start=0.2, div_factor=10, final_div_factor=100)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(total_steps, 1), eta_min=opts["lr"] / 100)
    use_amp = opts["amp"] and d.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    # ---- 5. resume
    history: list[dict] = []
    start_epoch, step, minutes_before, train_minutes = 0, 0, 0.0, 0.0
    best = {"miou": -1.0, "epoch": None, "val": None, "captions": None}
    if opts["resume"]:
        state = torch.load(last_path, map_location="cpu", weights_only=False)
        before = state["options"]
        changed = [k for k in RESUME_FIXED if before.get(k) != opts.get(k)]
        if changed:
            raise ConfigError(
                f"--resume: {last_path} was trained with different {', '.join(changed)} "
                f"({', '.join(f'{k}={before.get(k)!r}' for k in changed)}); use the same options, "
                "or start afresh with --overwrite"
            )
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, best = state["history"], state["best"]
        start_epoch, step = state["epoch"] + 1, state["step"]
        minutes_before, train_minutes = state["minutes"], state["train_minutes"]
        torch.set_rng_state(state["rng"]["torch"])
        gen.set_state(state["rng"]["loader"])
        train_ds._rng.setstate(state["rng"]["crop"])
        if d.main:
            print(f"resuming {out} after epoch {start_epoch} (step {step}, best val mIoU {best['miou']:.3f})")
    cfg = checkpoint_config(table, opts)
    res = {}
    if d.main:
        res = {"val": resolution(val_ds, table, "drone val split"),
               "captions": resolution(cap_ds, table, f"caption set, {opts['eval_split']} split")}
        below = (res["val"] or {}).get("below_resolution")
        if below:
            print(f"note: at target scale {opts['target_scale']}, {', '.join(below)} are mostly one pixel wide in "
                  f"the val masks (under {RESOLVED_SHARE:.0%} of their pixels in 2x2 blocks): below the resolution, "
                  "their IoU stays near 0; metrics.json also gives mIoU without them")
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
        if d.main:
            print(f"train {len(train_idx)} images ({len(train_ds)} crops/epoch), val {len(val_idx)}, "
                  f"captions {len(cap_ds) if cap_ds else 0}; {steps_per_epoch} steps/epoch, "
                  f"{total_steps} steps; device {d.device} x{d.world}, {torch.get_num_threads()} threads")

    # ---- 6. train
    t0 = time.perf_counter()
    for epoch in range(start_epoch, opts["epochs"]):
        if step >= total_steps:
            break
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        t_ep = time.perf_counter()
        loss_sum, n_batches = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{opts['epochs']}", disable=not bars, leave=False)
        for x, y in bar:
            x = x.to(d.device, non_blocking=True)
            y = y.to(d.device, non_blocking=True)
            if d.device.type == "cpu":
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(d, use_amp):
                logits = net(x)
                loss = F.cross_entropy(logits.float(), y, ignore_index=IGNORE_INDEX)
                if dice is not None:
                    loss = loss + dice(logits.float(), y)
            optim.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optim)
            scaler.update()
            sched.step()
            step += 1
            loss_sum += loss.item()
            n_batches += 1
            bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            if step >= total_steps:
                break
        bar.close()
        loss_t = d.sum(torch.tensor([loss_sum, n_batches], dtype=torch.float64))
        train_minutes += (time.perf_counter() - t_ep) / 60

        # ---- 7. evaluate: drone val split, caption set
        row = {"epoch": epoch + 1, "step": step, "lr": sched.get_last_lr()[0],
               "train_loss": round(float(loss_t[0] / max(loss_t[1], 1)), 5)}
        val_cm = cap_cm = None
        last = epoch + 1 == opts["epochs"] or step >= total_steps
        evaluating = last or (epoch + 1) % opts["eval_every"] == 0
        if val_loader is not None and evaluating:
            val_cm, val_loss = evaluate(model, val_loader, table.num_classes, d, use_amp)
            row.update(val_loss=round(val_loss, 5), val_miou=round(val_cm.miou, 5),
                       val_pixel_accuracy=round(val_cm.pixel_accuracy, 5))
        if cap_ds is not None and evaluating:
            cap_cm, _ = evaluate(model, cap_loader, table.num_classes, d, use_amp)
            row.update(caption_miou=round(cap_cm.miou, 5), caption_pixel_accuracy=round(cap_cm.pixel_accuracy, 5))
        row["train_minutes"] = round(train_minutes, 4)
        row["minutes"] = round(minutes_before + (time.perf_counter() - t0) / 60, 4)
        history.append(row)
        score = row.get("val_miou", row.get("caption_miou", -row["train_loss"]))
        improved = evaluating and score > best["miou"]
        if improved:
            best = {"miou": score, "epoch": epoch + 1,
                    "val": val_cm.summary(table.names) if val_cm else None,
                    "captions": cap_cm.summary(table.names) if cap_cm else None}
        if d.main:
            msg = f"epoch {epoch + 1}: train loss {row['train_loss']:.3f}"
            if "val_miou" in row:
                msg += f", val loss {row['val_loss']:.3f}, val mIoU {row['val_miou']:.3f}"
            if "caption_miou" in row:
                msg += f", caption-set {opts['eval_split']} mIoU {row['caption_miou']:.3f}"
            print(msg + f" ({row['minutes']:.2f} min)" + (" *best" if improved else ""), flush=True)

        # ---- 8. save (rank 0): best weights, last state, metrics
        if d.main:
            if improved:
                with atomic_path(out / "model.pt") as tmp:
                    torch.save(model.state_dict(), tmp)
            state = {"model": model.state_dict(), "optimizer": optim.state_dict(), "scheduler": sched.state_dict(),
                     "scaler": scaler.state_dict(), "epoch": epoch, "step": step, "history": history, "best": best,
                     "minutes": row["minutes"], "train_minutes": train_minutes, "options": opts,
                     "rng": {"torch": torch.get_rng_state(), "loader": gen.get_state(),
                             "crop": train_ds._rng.getstate()}}
            with atomic_path(last_path) as tmp:
                torch.save(state, tmp)
            write_json(out / "metrics.json", _metrics(opts, best, history, d, len(train_idx), len(val_idx), cap_ds, res))
        d.barrier()

    # ---- 9. figures of the best model (rank 0)
    metrics = _metrics(opts, best, history, d, len(train_idx), len(val_idx), cap_ds, res)
    if d.main:
        write_json(out / "metrics.json", metrics)
        _figures(out, table, cfg, best, history, val_ds, cap_ds, opts["samples"])
        resolved = metrics["resolution"]["val_miou_resolved_classes"]
        print(f"best epoch {best['epoch']}: val mIoU {_fmt(best['val'])}"
              + (f" ({resolved:.3f} over the classes above the resolution)" if resolved is not None else "")
              + f", caption-set mIoU {_fmt(best['captions'])}; wrote {out}")
    d.barrier()
    return metrics


def _fmt(summary: dict | None) -> str:
    return "n/a" if not summary or summary["miou"] is None else f"{summary['miou']:.3f}"


RESOLVED_SHARE = 0.5  # a class with fewer of its pixels in 2x2 blocks than this is below the resolution


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


def _resolved_miou(summary: dict | None, res: dict | None) -> float | None:
    """Mean IoU over the measured classes that are not below the resolution."""
    if not summary or not res:
        return None
    ious = [v for n, v in summary["per_class_iou"].items() if v is not None and n not in res["below_resolution"]]
    return round(float(np.mean(ious)), 5) if ious else None


def _metrics(opts, best, history, d: Dist, n_train: int, n_val: int, cap_ds, res: dict | None = None) -> dict:
    res = res or {}
    return {
        "best_epoch": best["epoch"],
        "selected_by": "val mIoU" if n_val else ("caption-set mIoU" if cap_ds else "train loss"),
        "val": best["val"],
        "captions": None if best["captions"] is None else {**best["captions"], "split": opts["eval_split"],
                                                             "images": len(cap_ds), "root": opts["eval_captions"]},
        "resolution": {
            "rule": f"a class is below the resolution when under {RESOLVED_SHARE:.0%} of its pixels lie in a 2x2 "
                    "block of the class at the measured scale (mostly one pixel wide): no segmenter can draw it there",
            "val": res.get("val"), "captions": res.get("captions"),
            "val_miou_resolved_classes": _resolved_miou(best["val"], res.get("val")),
            "caption_miou_resolved_classes": _resolved_miou(best["captions"], res.get("captions")),
        },
        "history": history,
        "train": {"images": n_train, "val_images": n_val, "epochs_done": len(history), "device": str(d.device),
                  "world_size": d.world, "threads": torch.get_num_threads(),
                  "minutes": history[-1]["minutes"] if history else 0.0,
                  "train_minutes": history[-1]["train_minutes"] if history else 0.0},
    }


def _figures(out: Path, table: ClassTable, cfg: dict, best: dict, history: list[dict], val_ds, cap_ds,
             samples: int) -> None:
    from segmentation.plots import plot_confusion, plot_history, plot_samples

    if not history:
        return
    plot_history(history, out / "history.png")
    for key, name in (("val", "drone val split"), ("captions", "caption set")):
        if best[key]:
            plot_confusion(np.array(best[key]["confusion_matrix_normalised"]), table.names,
                           out / f"confusion_{key}.png", f"{name}, epoch {best['epoch']} (rows normalised)")
    model = build_model(cfg["architecture"], table.num_classes)
    model.load_state_dict(torch.load(out / "model.pt", map_location="cpu", weights_only=True))
    seg = Segmenter(model, table, cfg)
    for key, ds in (("val", val_ds), ("captions", cap_ds)):
        if ds is None or samples <= 0 or len(ds) == 0:
            continue
        rows = []
        for k in sorted({int(v) for v in np.linspace(0, len(ds) - 1, min(samples, len(ds)))}):  # spread over the set
            image, truth = ds.raw(k)
            pred = seg.predict([image])[0]
            rows.append((ds.source.stems[ds.indices[k]], image, truth, pred))
        plot_samples(rows, table.names, table.colors, out / f"samples_{key}.png",
                     f"{'drone val' if key == 'val' else 'caption set'}: image | truth | prediction")


if __name__ == "__main__":
    run(main)
