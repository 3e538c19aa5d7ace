"""Stages ``segmentation`` (segmentation.train, unless a checkpoint is given), ``scenes`` (segmentation.scene: a
scene head on the segmenter's encoder, only with ``scene_head``) and ``masks`` (segmentation.predict on every
caption-set image)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aerialdata.classes import load_class_table
from pipeline.layout import CHECKPOINT_FILES, Layout, read_json
from pipeline.stages.base import Run, Stage, added, call, register
from pipeline.stages.data import trains_on_sources
from segcap.errors import ConfigError
from segmentation.model import SCENE_HEAD_FILES, read_checkpoint_config
from segmentation.predict import main as predict_masks
from segmentation.scene import main as train_scene_head
from segmentation.train import main as train_segmenter
from segmentation.train import resumable


# ---------------------------------------------------------------------------------------------------- segmentation
@dataclass(frozen=True)
class GivenCheckpoint:
    """A checkpoint from elsewhere: its files are the stage's outputs, whose digest is checked too."""

    checkpoint: Path


@dataclass(frozen=True)
class SegmentationOptions:
    config: dict  # the checked options of segmentation_config
    options: dict  # the pipeline config's segmentation section
    classes: dict  # the class table
    caption_scale: float
    split: str  # the caption-set split the segmenter is measured on


def segmentation_options(run: Run) -> GivenCheckpoint | SegmentationOptions:
    if run.layout.checkpoint_given is not None:
        return GivenCheckpoint(run.layout.checkpoint_given)
    return SegmentationOptions(run.segmentation_file, run.segmentation, load_class_table(run.classes).to_dict(),
                               run.caption_scale, run.split)


def run_segmentation(run: Run, opts: GivenCheckpoint | SegmentationOptions, fresh: bool, commands: list[str]) -> dict:
    lay = run.layout
    if isinstance(opts, GivenCheckpoint):
        return {"status": "given", "checkpoint": str(opts.checkpoint),
                "best_val_miou": read_json(opts.checkpoint / "metrics.json").get("best_val_miou")}
    out = lay.trained_checkpoint
    resume = not fresh and resumable(out)
    # the one drone set (drone_root) unless the options list labelled sources; then the config's drone form is cleared
    data = {"data_root": None, "target_scale": None} if trains_on_sources(run) else {"data_root": lay.drone_root}
    call(commands, "segmentation", train_segmenter, config=run.segmentation_config, file_options=opts.config,
         user=opts.options, **data, out=out, classes=run.classes,
         eval_captions=lay.captions_root if lay.has_truth_masks() else None, eval_split=opts.split,
         caption_scale=opts.caption_scale, resume=resume, overwrite=not resume, progress=run.progress)
    return {"checkpoint": str(out), "resumed": resume,
            "best_val_miou": read_json(out / "metrics.json").get("best_val_miou")}


register(Stage("segmentation", ("data",), lambda lay: [lay.checkpoint / name for name in CHECKPOINT_FILES],
               segmentation_options, run_segmentation))


# ---------------------------------------------------------------------------------------------------- scenes
@dataclass(frozen=True)
class SceneOptions:
    scene_head: bool
    caption_scale: float
    scene_encoder: str
    scene_views: int = added(1)


def scene_options(run: Run) -> SceneOptions | None:
    if not run.scene_head:
        return None
    return SceneOptions(run.scene_head, run.caption_scale, run.scene_encoder, run.scene_views)


def pretrained_weights(checkpoint: Path) -> str | None:
    """The encoder weights a segmentation checkpoint started from, as its config records them."""
    return (read_checkpoint_config(checkpoint).get("training") or {}).get("encoder_weights")


def run_scenes(run: Run, opts: SceneOptions | None, fresh: bool, commands: list[str]) -> dict:
    """segmentation.scene on the caption set's training split (its val split chooses the L2 strength), into
    run_dir/scenes, never into a given checkpoint's folder. Afresh each time: the features are cached there, so a
    rerun reads no image unless the checkpoint or the scale changed."""
    if opts is None:
        return {"status": "not asked for"}
    lay = run.layout
    weights = None
    if opts.scene_encoder == "pretrained":
        weights = pretrained_weights(lay.checkpoint)
        if not weights:
            raise ConfigError(f"scene_encoder pretrained: the segmentation checkpoint {lay.checkpoint} started from "
                              "random weights (its config.yaml records no training.encoder_weights); set the "
                              "segmentation's encoder_weights (imagenet or a file), or scene_encoder: segmenter")
    info = call(commands, "scenes", train_scene_head, checkpoint=lay.checkpoint, captions=lay.references,
                images_dir=lay.images_dir, out=lay.scenes, scale=opts.caption_scale, encoder_weights=weights,
                views=opts.scene_views, overwrite=True, progress=run.progress)
    m = info["metrics"]
    return {"scene_head": str(lay.scenes), "classes": len(info["classes"]),
            **{k: m.get(k) for k in ("train_accuracy", "val_accuracy", "test_accuracy")}}


register(Stage("scenes", ("data", "segmentation"), lambda lay: [lay.scenes / name for name in SCENE_HEAD_FILES],
               scene_options, run_scenes, active=lambda run: run.scene_head))


# ---------------------------------------------------------------------------------------------------- masks
@dataclass(frozen=True)
class MaskOptions:
    caption_scale: float
    scene_head: bool = added(False)


def run_masks(run: Run, opts: MaskOptions, fresh: bool, commands: list[str]) -> dict:
    lay = run.layout
    return call(commands, "masks", predict_masks, checkpoint=lay.checkpoint, images=lay.images, out=lay.masks,
                scene_head=str(lay.scenes) if opts.scene_head else None, scale=opts.caption_scale, overwrite=fresh,
                progress=run.progress)


def _mask_outputs(lay: Layout) -> list[Path]:
    return [lay.masks]


register(Stage("masks", ("data", "segmentation", "scenes"), _mask_outputs,
               lambda run: MaskOptions(run.caption_scale, run.scene_head), run_masks))
