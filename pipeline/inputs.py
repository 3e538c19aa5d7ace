"""Every input of the stages that will run, checked before the first one runs (:func:`input_problems`).

Checked once the options are: every file a stage will read, with the options it will read it with, so that a run
does not stop at its last stage for want of a file it could have looked at before its first (a caption set whose
images are elsewhere cost one 46-minute run its report).
"""

from __future__ import annotations

from pathlib import Path

from aerialdata.captionset import IMAGE_DIRS, CaptionDataset
from aerialdata.drone import DroneDataset
from aerialdata.images import image_size
from aerialdata.sources import source_problems
from captioners.encoders import build_trunk, is_weights_name
from captioners.hf import is_hub_id
from captioners.model import model_arch
from captioners.registry import SYSTEMS as CAPTIONERS
from captioners.train import main as train_captioner
from llm.generate import pool_problem
from pipeline.stages import STAGES, Run
from pipeline.stages.captioners import cnn_lstm_options
from pipeline.stages.data import data_plan
from pipeline.stages.segmentation import pretrained_weights
from pipeline.systems import retrieval_users
from segcap import atomic
from segcap.errors import ConfigError, DataError, DatasetNotFoundError, SegcapError
from segcap.options import options_of
from segmentation.model import build_model, encoder_weights_problems, is_imagenet, load_segmenter

SHOWN = 5  # file names shown in a message


def input_problems(run: Run, stages: set[str] | None = None) -> list[str]:
    """Every problem with the inputs of the stages that may run (``stages``; None: all), before the first one runs
    (empty: none found).

    The caption set (its JSON, the images folder, every image the JSON names, the splits the stages train and
    caption on: the masks, captioners and captions stages, the report's examples and the app read them all), the
    segmentation's training data (the drone set, or each of ``sources``), the weights files that stages load (the
    segmenter's and the CNN+LSTM's encoder weights, a given segmentation checkpoint, a zero-shot captioner) and the
    number of training images that ``retrieval_k`` draws on. Data that the data stage will generate is not there yet:
    then only data_root is checked (writable)."""
    stages = set(STAGES) if stages is None else stages
    problems: list[str] = []
    plan = "present"
    if "data" in stages:
        try:
            plan = data_plan(run)
        except DatasetNotFoundError as e:
            return [str(e)]
        if plan == "generate":
            try:
                atomic.check_writable(run.data_root, False, "data_root (for the synthetic sets)", folder=True)
            except OSError as e:
                problems.append(str(e))
    if plan == "present" and stages - {"data"}:  # every other stage reads the caption set (or its masks)
        problems += caption_set_problems(run)
    return problems + segmentation_input_problems(run, plan, stages) + captioner_input_problems(run, stages)


def caption_set_problems(run: Run) -> list[str]:
    """The caption set as the stages read it: the JSON, the images folder found in captions_root (or images_dir),
    every image the JSON names there (the first opened), a split to train on and the split to caption."""
    lay = run.layout
    try:
        ds = CaptionDataset(lay.references, images_dir=lay.images_dir)
    except (DataError, DatasetNotFoundError, ConfigError) as e:
        return [f"captions: {e}"]
    if not lay.images.is_dir():
        return [f"captions: {lay.captions_root} has no images folder {lay.images_dir}/ (images_dir, or else the first "
                f"of {', '.join(IMAGE_DIRS)} there); set images_dir to the folder of the caption images inside "
                "captions_root"]
    problems = []
    missing = [it.filename for it in ds if not (lay.images / it.filename).is_file()]
    if missing:
        shown = ", ".join(missing[:SHOWN]) + (f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else "")
        problems.append(f"captions: {len(missing)} of the {len(ds)} images that {lay.references} names are not in "
                        f"{lay.images}: {shown}; copy them there, or set images_dir to the folder that holds them")
    elif len(ds):
        try:
            image_size(lay.images / ds[0].filename)
        except DataError as e:
            problems.append(f"captions: {e}")
    if lay.has_truth_masks():  # the segmenter's caption-set mIoU and the oracle's compositions read them
        no_mask = [it.filename for it in ds if it.split == run.split and not ds.mask_path(it.filename).is_file()]
        if no_mask:
            shown = ", ".join(no_mask[:SHOWN]) + (f" and {len(no_mask) - SHOWN} more" if len(no_mask) > SHOWN else "")
            problems.append(f"captions: {len(no_mask)} images of split {run.split} have no exact mask in "
                            f"{lay.truth_masks}: {shown}; add their <stem>.png masks, or remove that folder (the "
                            "run then measures no caption-set mIoU and trains no oracle)")
    splits = {it.split for it in ds}
    present = ", ".join(sorted(splits)) or "none"
    if "train" not in splits:
        problems.append(f"captions: {lay.references} has no images in split 'train' (splits present: {present}); "
                        "the language models and captioners train on it: give the caption set a training split")
    if run.split not in splits:
        problems.append(f"split: {lay.references} has no images in split {run.split!r} (splits present: {present});"
                        f" set split to one of {', '.join(s for s in ('test', 'val') if s in splits) or 'test, val'}")
    train = sum(it.split == "train" for it in ds)
    users = [s for s in retrieval_users() if run.wants(s)]
    if users and 0 < train < run.retrieval_k:
        problems.append(f"{pool_problem(run.retrieval_k, train, f'{lay.references}, split train', 'retrieval_k')}; "
                        f"it is used by {', '.join(users)}")
    return problems


def segmentation_input_problems(run: Run, plan: str, stages: set[str]) -> list[str]:
    """What the segmentation stages will read: a given checkpoint (loaded), or the training data (the drone set, or
    each source, opened) and the encoder weights file (loaded into the network)."""
    lay = run.layout
    if lay.checkpoint_given is not None:
        if not stages & {"scenes", "masks"}:
            return []
        try:
            load_segmenter(lay.checkpoint_given, device="cpu", scene_head="none")
        except SegcapError as e:
            return [f"segmentation_checkpoint: {e}"]
        if run.scene_head and run.scene_encoder == "pretrained":
            weights = pretrained_weights(lay.checkpoint_given)
            if not weights:
                return [f"scene_encoder pretrained: the segmentation checkpoint {lay.checkpoint_given} started from "
                        "random weights (its config.yaml records no training.encoder_weights); set scene_encoder: "
                        "segmenter, or give a checkpoint trained from imagenet or a weights file"]
            return [f"scene_encoder pretrained: {p}" for p in encoder_weights_problems(weights)]
        return []
    seg = {**run.segmentation_file, **run.segmentation}
    problems = []
    if run.scene_head and run.scene_encoder == "pretrained" and not seg.get("encoder_weights") and "scenes" in stages:
        problems.append("scene_encoder pretrained: the segmenter trains from random weights (its encoder_weights is "
                        "empty), so there are no pretrained weights to read; set the segmentation's encoder_weights "
                        "(imagenet or a file), or scene_encoder: segmenter")
    if "segmentation" not in stages:
        return problems
    if seg.get("sources") is not None:
        problems += [f"segmentation: {p}" for p in source_problems(seg["sources"], run.classes)]
    elif plan == "present":
        try:
            DroneDataset(lay.drone_root, run.classes)
        except SegcapError as e:
            problems.append(f"drone_root: {e}")
    weights = seg.get("encoder_weights")
    if weights and not is_imagenet(weights) and Path(weights).is_file():
        try:  # the file is read and matched against the encoder now, not after the data stage
            build_model({}, 2, weights)
        except ConfigError as e:
            problems += [f"segmentation: {p}" for p in e.problems]
    return problems


def captioner_input_problems(run: Run, stages: set[str]) -> list[str]:
    """What the end-to-end captioners will load: each CNN+LSTM's encoder weights file (the image_nearest reference's
    too), and each zero-shot checkpoint folder."""
    problems = []
    encoders = {s: {**e["file"], **e["options"]} for s, e in run.captioners.items()
                if "encoder_weights" in CAPTIONERS[s].option_names and not e["zero_shot"] and "captioners" in stages}
    if run.wants("image_nearest") and "cnn_lstm" not in encoders and "captions" in stages:
        encoders["image_nearest"] = cnn_lstm_options(run)
    defaults = options_of(train_captioner)
    for system, options in encoders.items():
        encoder, weights = (options.get(k, defaults[k].default) for k in ("encoder", "encoder_weights"))
        if weights is None or is_weights_name(encoder, str(weights)) or not Path(weights).expanduser().is_file():
            continue  # a torchvision name (checked with the options) or no file (ditto)
        try:
            build_trunk(encoder, options.get("encoder_stride", defaults["encoder_stride"].default), weights)
        except ConfigError as e:
            problems += [f"captioners.{system}: {p}" for p in e.problems]
    for system, entry in run.captioners.items():
        checkpoint = entry["checkpoint"]
        if (entry["zero_shot"] or CAPTIONERS[system].needs_checkpoint) and checkpoint and not is_hub_id(checkpoint) and \
                stages & {"captioners", "captions"}:
            try:
                model_arch(checkpoint)
            except SegcapError as e:
                problems.append(f"captioners.{system}: {e}")
    return problems


