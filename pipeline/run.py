"""The whole chain on one caption set, stage by stage: what ``make demo`` runs.

    python -m pipeline.run --config configs/pipeline/synthetic.yaml                 # the demo (synthetic data)
    python -m pipeline.run --config configs/pipeline/synthetic.yaml --force llm     # redo one stage
    python -m pipeline.run --config configs/pipeline/synthetic.yaml --from compositions   # redo from a stage on
    python -m pipeline.run --config configs/pipeline/synthetic.yaml --only score    # one stage, outputs upstream
    python -m pipeline.run --config configs/pipeline/rsicd.yaml                     # real data, Llama-2 + QLoRA

Stages, in order (each writes under ``run_dir`` and a stamp ``stages/<name>.json`` when it has finished; the paths
are in :mod:`pipeline.layout`):

=============  =========================================================================================
data           synthetic.generate, only when the data is absent (or was generated with other options)
segmentation   segmentation.train on the drone set (skipped when ``segmentation_checkpoint`` is given)
scenes         segmentation.scene: a scene head on the segmenter's encoder, fitted on the caption set's categories
               (training split; the val split chooses its L2), into run_dir/scenes; only with ``scene_head: true``
masks          segmentation.predict on every caption-set image (and their top scenes, with ``scene_head: true``)
compositions   composition.extract of the predicted masks, and of the exact masks when the set has them
llm            llm.finetune on the predicted compositions (the pipeline's captioner)
oracle         llm.finetune on the exact-mask compositions (what perfect segmentation would give)
blind          llm.finetune with the composition text removed (what the image content adds)
rag            llm.finetune with retrieval-augmented prompts: composition + the captions of the closest training images
rag_only       llm.finetune with the neighbours' captions and no composition text (the retrieval-only ablation)
captioners     captioners.train of the end-to-end captioners asked for (cnn_lstm, vit_gpt2, blip): pixels -> caption
captions       llm.generate (greedy, beam search, consensus decoding) and captioners.generate and the baselines
score          evaluation.score of every system, with the human-agreement ceiling
report         report.md: results, segmentation and composition figures, examples
=============  =========================================================================================

Every option is checked before the first stage runs: the pipeline's own, the entry points' YAML configs and the
per-stage sections (``synthetic:``, ``segmentation:``, ``llm:``, one ``captioners:`` entry per end-to-end system), by the same typed check as command-line flags
(:func:`segcap.cli.check_options`), so a typo in the ``llm:`` section fails at once, not after the segmentation.
So is every input of the stages that will run, with the options they will read it with (:func:`input_problems`):
the caption set (its JSON, its images folder, found in captions_root or named by images_dir, every image the JSON
names, the first one opened, the splits to train on and to caption, the exact masks of that split), the drone set
or each labelled source of the segmentation (opened), the weights files stages load (encoder weights read into the
network, a given segmentation checkpoint loaded, a zero-shot captioner's folder) and the training images that
retrieval_k draws on. The report's examples and the app read the same images folder. All problems are reported
together, in one message, and nothing is written.

Once the compositions exist, their health flags (composition.health: one class dominant, few class orders) are
printed, and a run that stops in a later stage prints them again with its summary (the stages finished, the one
that failed), before its error.

Each stamp holds the stage's *fingerprint*, a hash of every option the stage reads (the checked values of its
config files and section, the pipeline settings it uses, the class table) and of the *digests* of the upstream
outputs it reads (each upstream stamp records the digest of its own outputs when it finishes: file names, sizes,
times and bytes). A rerun skips a stage whose fingerprint matches and whose outputs are as it left them. Anything
else runs: a stage whose options changed runs afresh, and since its outputs change, so does every stage that reads
them; ``--force masks`` therefore redoes masks, compositions and everything after. A stage that never finished
resumes where its own tool can (segmentation's last state, the LLM's checkpoints, masks already written) if it
started with the same fingerprint (``stages/<name>.started.json``); otherwise it starts afresh, replacing its
outputs. ``--force`` redoes the named stages afresh; ``--from`` redoes a stage and every later one afresh.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from aerialdata.captionset import IMAGE_DIRS, CaptionDataset
from aerialdata.classes import load_class_table
from aerialdata.drone import DroneDataset
from aerialdata.images import image_size
from aerialdata.sources import source_problems
from captioners.encoders import build_trunk, is_weights_name
from captioners.encoders import encoder_weights_problems as captioner_weights_problems
from captioners.generate import main as generate_end_to_end
from captioners.hf import is_hub_id
from captioners.model import model_arch
from captioners.nearest import image_nearest
from captioners.train import main as train_captioner
from composition.extract import main as extract_compositions
from composition.schema import read_jsonl
from evaluation.score import main as score_captions
from llm.finetune import OUTPUTS_VERSION as FINETUNE_OUTPUTS
from llm.finetune import main as finetune_llm
from llm.generate import main as generate_captions
from llm.generate import pool_problem
from llm.model import base_model_problems
from pipeline.baselines import (
    NearestNeighbour,
    categories_summary,
    class_oracle,
    neighbour_caption,
    template_caption,
)
from pipeline.layout import (
    ABLATION_SYSTEMS,
    CHAIN_SYSTEMS,
    CHECKPOINT_FILES,
    END_TO_END,
    LLM_FOLDER,
    OPTIONAL_UPSTREAM,
    STAGES,
    SYSTEMS,
    UPSTREAM,
    Layout,
    read_json,
)
from pipeline.report import health_line, results_rows, write_report
from segcap import atomic
from segcap.cli import check_options, config_kwargs
from segcap.cli import run as run_cli
from segcap.errors import ConfigError, DataError, DatasetNotFoundError, SegcapError
from segmentation.model import (
    SCENE_VIEWS,
    build_model,
    encoder_weights_problems,
    is_imagenet,
    load_segmenter,
    read_checkpoint_config,
)
from segmentation.predict import main as predict_masks
from segmentation.scene import main as train_scene_head
from segmentation.scene import scene_classes
from segmentation.train import form_problems, resumable
from segmentation.train import main as train_segmenter
from synthetic.generate import main as generate_synthetic

REPO = Path(__file__).resolve().parents[1]
ALIASES = {"from_stage": ["--from"]}  # `from` is a Python keyword
SECTIONS: dict[str, Callable[..., Any]] = {  # the pipeline config's per-stage sections and whose options they hold
    "synthetic": generate_synthetic, "segmentation": train_segmenter, "llm": finetune_llm}
# the captioners.train config each end-to-end system starts from (a ``config:`` key in its ``captioners:`` entry
# replaces it); blip has none: it needs a checkpoint the user names
CAPTIONER_CONFIGS: dict[str, Path | None] = {
    "cnn_lstm": REPO / "configs" / "captioners" / "synthetic.yaml",
    "vit_gpt2": REPO / "configs" / "captioners" / "vit-gpt2-tiny.yaml",
    "blip": None,
}
PRETRAINED_OPTION = "checkpoint"  # the captioners.train option naming a pretrained checkpoint (folder or hub id)
DEFAULT_SYSTEMS = (*CHAIN_SYSTEMS, "cnn_lstm")
GENERATED = "generated_by_pipeline.json"  # in data_root: the synthetic.generate options the data was written with


# ---------------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class Run:
    """Everything the stages read: the run's layout and its options, checked and typed before any stage runs.

    ``*_file`` are the checked options of the entry points' YAML configs; ``synthetic``, ``segmentation`` and
    ``llm`` the pipeline config's sections, which override them. ``captioners`` holds, for each end-to-end system
    asked for, its config file (``config``), that file's checked options (``file``) and the entry's (``options``).
    """

    layout: Layout
    data_root: Path
    generate: bool
    synthetic: dict
    classes: str
    segmentation_config: Path
    segmentation_file: dict
    segmentation: dict
    caption_scale: float
    composition_config: Path
    composition_file: dict
    llm_config: Path
    llm_file: dict
    llm: dict
    num_beams: int
    retrieval_k: int
    retrieval_captions: int
    consensus: int
    consensus_candidates: str
    systems: tuple[str, ...]
    split: str
    progress: bool
    captioners: dict[str, dict] = dataclasses.field(default_factory=dict)
    scene_head: bool = False
    scene_encoder: str = "segmenter"
    scene_views: int = 1

    def wants(self, system: str) -> bool:
        return system in self.systems


def _as_command(module: str, kwargs: dict[str, Any]) -> str:
    """The command line that repeats a call of ``module``'s ``main`` with these arguments (None clears a value)."""
    parts = [f"python -m {module}"]
    for k, v in kwargs.items():
        flag = "--" + k.replace("_", "-")
        if k == "progress":
            continue
        if v is None:
            parts.append(f"{flag} null")
        elif isinstance(v, bool):
            parts.append(flag if v else f"--no-{k.replace('_', '-')}")
        elif isinstance(v, (list, tuple)):
            parts.append(f"{flag} {' '.join(shlex.quote(str(x)) for x in v)}")
        elif isinstance(v, dict):
            parts.append(f"{flag} {shlex.quote(json.dumps(v))}")
        else:
            parts.append(f"{flag} {shlex.quote(str(v))}")
    return " ".join(parts)


def _call(commands: list[str], stage: str, fn: Callable[..., Any], config: Path | None = None,
          file_options: dict | None = None, user: dict | None = None, **overrides) -> Any:
    """Call an entry point's ``main`` with its YAML config's options (``file_options``, read from ``config``), then
    the pipeline's ``overrides`` (None included: it clears a config value), then the ``user``'s section of the
    pipeline config (which wins), checked together by the entry point's typed check; log the command."""
    merged = {**(file_options or {}), **overrides, **(user or {})}
    kwargs = check_options(fn, merged, f"stage {stage} ({fn.__module__})")
    shown = {"config": config, **overrides, **(user or {})} if config else dict(merged)
    commands.append(_as_command(fn.__module__, shown))
    return fn(**kwargs)


# ---------------------------------------------------------------------------------------------------- stages
# Each stage is ``stage(run, fresh, commands) -> result``: ``fresh`` says whether to replace its outputs (True) or
# resume an interrupted attempt (False); it appends the equivalent stand-alone commands to ``commands``; the result
# goes into its stamp.
def _synthetic_options(run: Run) -> dict:
    """Every option synthetic.generate writes the data with (its defaults, then the ``synthetic:`` section)."""
    params = inspect.signature(generate_synthetic).parameters
    options = {k: p.default for k, p in params.items() if k not in ("out", "overwrite", "progress")}
    options.update(run.synthetic)
    return json.loads(json.dumps(options, default=str))  # as a JSON file holds them (tuples become lists)


def _generated_with(run: Run) -> dict | None:
    """The synthetic.generate options the data under ``data_root`` was written with: the pipeline's record of them,
    {} when synthetic.generate wrote the caption set but the options are unknown, None for data it did not write."""
    marker = read_json(run.data_root / GENERATED)
    if marker:
        return marker.get("options") or {}
    generator = read_json(run.layout.references).get("generator") or {}
    return {} if generator.get("name") == "synthetic.generate" else None


def _trains_on_sources(run: Run) -> bool:
    """Whether the segmentation options list labelled ``sources`` (then no drone_root is needed or passed)."""
    return {**run.segmentation_file, **run.segmentation}.get("sources") is not None


def data_plan(run: Run) -> Literal["present", "generate"]:
    """What the data stage will do: keep the data that is there (``present``), or write the synthetic sets
    (``generate``: with ``generate`` on, when they are absent or were written with other options); a
    :class:`DatasetNotFoundError` when it can do neither (the data is missing and generate is off, or data_root holds
    files that synthetic.generate did not write, which are never replaced)."""
    lay = run.layout
    have_captions = lay.references.is_file()
    have_drone = lay.drone_images.is_dir() or lay.checkpoint_given is not None or _trains_on_sources(run)
    wanted = _synthetic_options(run) if run.generate else None
    written_with = _generated_with(run)
    if have_captions and have_drone and (not run.generate or written_with is None or written_with == wanted):
        return "present"
    if not run.generate:
        missing = lay.references if not have_captions else lay.drone_images
        raise DatasetNotFoundError(
            f"{missing} not found; point captions_root/drone_root at your data, or set generate: true to write "
            "the synthetic sets there"
        )
    if written_with is None and run.data_root.is_dir() and any(run.data_root.iterdir()):
        missing = lay.references if not have_captions else lay.drone_images
        raise DatasetNotFoundError(
            f"{missing} not found, and data_root {run.data_root} holds files that synthetic.generate did not write; "
            "set data_root to a new folder for the synthetic sets, or point captions_root/drone_root at your data"
        )
    return "generate"


def stage_data(run: Run, fresh: bool, commands: list[str]) -> dict:
    """The data must be there; with ``generate`` on, the synthetic sets are written when absent or written with
    other options (:func:`data_plan`). Generation is deterministic (the same options give the same bytes), so
    ``fresh`` changes nothing here, and data that synthetic.generate did not write is never replaced."""
    lay = run.layout
    if data_plan(run) == "present":
        return {"status": "present", "captions": str(lay.references)}
    written_with = _generated_with(run)
    wanted = _synthetic_options(run)
    summary = _call(commands, "data", generate_synthetic, out=run.data_root, progress=run.progress,
                    overwrite=written_with is not None, user=run.synthetic)
    atomic.write_json(run.data_root / GENERATED, {"options": wanted})
    if not (lay.references.is_file() and (lay.drone_images.is_dir() or lay.checkpoint_given is not None)):
        raise DatasetNotFoundError(
            f"synthetic.generate wrote {run.data_root}, but {lay.references} or {lay.drone_images} is still missing; "
            "leave captions_root and drone_root unset (they default to data_root/rsicd and data_root/drone)"
        )
    return {"status": "generated", "captions": str(lay.references), "summary": summary}


def stage_segmentation(run: Run, fresh: bool, commands: list[str]) -> dict:
    lay = run.layout
    if lay.checkpoint_given is not None:
        return {"status": "given", "checkpoint": str(lay.checkpoint_given),
                "best_val_miou": read_json(lay.checkpoint_given / "metrics.json").get("best_val_miou")}
    out = lay.trained_checkpoint
    resume = not fresh and resumable(out)
    # the one drone set (drone_root) unless the options list labelled sources; then the config's drone form is cleared
    data = {"data_root": None, "target_scale": None} if _trains_on_sources(run) else {"data_root": lay.drone_root}
    _call(commands, "segmentation", train_segmenter, config=run.segmentation_config,
          file_options=run.segmentation_file, user=run.segmentation, **data, out=out, classes=run.classes,
          eval_captions=lay.captions_root if lay.has_truth_masks() else None, eval_split=run.split,
          caption_scale=run.caption_scale, resume=resume, overwrite=not resume, progress=run.progress)
    return {"checkpoint": str(out), "resumed": resume,
            "best_val_miou": read_json(out / "metrics.json").get("best_val_miou")}


def stage_scenes(run: Run, fresh: bool, commands: list[str]) -> dict:
    """With ``scene_head``: segmentation.scene on the caption set's training split (its val split chooses the L2
    strength), into run_dir/scenes, never into a given checkpoint's folder. Afresh each time: the features are cached
    there, so a rerun reads no image unless the checkpoint or the scale changed."""
    if not run.scene_head:
        return {"status": "not asked for"}
    lay = run.layout
    weights = None
    if run.scene_encoder == "pretrained":  # the weights the segmenter started from, as its config records them
        weights = (read_checkpoint_config(lay.checkpoint).get("training") or {}).get("encoder_weights")
        if not weights:
            raise ConfigError(f"scene_encoder pretrained: the segmentation checkpoint {lay.checkpoint} started from "
                              "random weights (its config.yaml records no training.encoder_weights); set the "
                              "segmentation's encoder_weights (imagenet or a file), or scene_encoder: segmenter")
    info = _call(commands, "scenes", train_scene_head, checkpoint=lay.checkpoint, captions=lay.references,
                 images_dir=lay.images_dir, out=lay.scenes, scale=run.caption_scale, encoder_weights=weights,
                 views=run.scene_views, overwrite=True, progress=run.progress)
    m = info["metrics"]
    return {"scene_head": str(lay.scenes), "classes": len(info["classes"]),
            **{k: m.get(k) for k in ("train_accuracy", "val_accuracy", "test_accuracy")}}


def stage_masks(run: Run, fresh: bool, commands: list[str]) -> dict:
    lay = run.layout
    return _call(commands, "masks", predict_masks, checkpoint=lay.checkpoint, images=lay.images, out=lay.masks,
                 scene_head=str(lay.scenes) if run.scene_head else None, scale=run.caption_scale, overwrite=fresh,
                 progress=run.progress)


def stage_compositions(run: Run, fresh: bool, commands: list[str]) -> dict:
    lay = run.layout
    # the checkpoint's class table, as a file the stand-alone command can read too
    atomic.write_text(lay.classes_yaml, yaml.safe_dump(lay.class_table().to_dict(), sort_keys=False))
    extract = functools.partial(_call, commands, "compositions", extract_compositions, config=run.composition_config,
                                file_options=run.composition_file, classes=str(lay.classes_yaml), overwrite=True)
    extract(masks=lay.masks, out=lay.predicted)
    out = {"predicted": str(lay.predicted)}
    if lay.has_truth_masks():
        extract(masks=lay.truth_masks, out=lay.truth, source_ids=True)
        out["truth"] = str(lay.truth)
    else:
        lay.truth.unlink(missing_ok=True)  # from an earlier caption set
    return out


@dataclass(frozen=True)
class LlmStage:
    """What one fine-tune stage trains on: the exact-mask compositions or the predicted ones, the prompt mode, whether
    its prompts retrieve neighbours (with the pipeline's ``retrieval_k``; the others never do, whatever the llm
    config holds, so that each system means what its name says), and the systems it serves (empty: always runs)."""

    truth: bool
    prompt_mode: str
    retrieval: bool
    serves: tuple[str, ...]


LLM_SPECS: dict[str, LlmStage] = {
    "llm": LlmStage(False, "full", False, ()),
    "oracle": LlmStage(True, "full", False, ("oracle",)),
    "blind": LlmStage(False, "blind", False, ("blind",)),
    "rag": LlmStage(False, "full", True, ("pipeline_rag", "pipeline_rag_mbr")),
    "rag_only": LlmStage(False, "blind", True, ("rag_only",)),
    "scene_only": LlmStage(False, "scene", False, ("pipeline_scene",)),
    "composition_only": LlmStage(False, "composition", False, ("pipeline_composition",)),
}


def _llm_options(run: Run, stage: str) -> dict:
    """The llm section's options as the stage trains with them (its retrieval settings on top)."""
    retrieval = ({"retrieval_k": run.retrieval_k, "retrieval_captions": run.retrieval_captions}
                 if LLM_SPECS[stage].retrieval else {"retrieval_k": 0})
    return {**run.llm, **retrieval}


def _wanted(run: Run, stage: str) -> bool:
    serves = LLM_SPECS[stage].serves
    return not serves or any(run.wants(s) for s in serves)


def stage_llm(run: Run, fresh: bool, commands: list[str], stage: str = "llm") -> dict:
    """llm.finetune for one of :data:`LLM_SPECS` (``stage``); skipped when none of the systems it serves is asked for,
    or, for the oracle, when the caption set has no exact masks."""
    spec, lay = LLM_SPECS[stage], run.layout
    if not _wanted(run, stage):
        return {"status": "not asked for"}
    if spec.truth and not lay.truth.is_file():
        return {"status": f"skipped: the caption set has no exact masks ({lay.truth_masks.name}/)"}
    out = lay.llm(LLM_FOLDER[stage])
    resume = not fresh and any((out / "checkpoints").glob("checkpoint-*"))
    model = _call(commands, stage, finetune_llm, config=run.llm_config, file_options=run.llm_file,
                  user=_llm_options(run, stage), compositions=lay.truth if spec.truth else lay.predicted,
                  captions=lay.references, out=out, prompt_mode=spec.prompt_mode, resume=resume,
                  overwrite=not resume, progress=run.progress)
    return {"model": str(model), "resumed": resume}


def stage_captioners(run: Run, fresh: bool, commands: list[str]) -> dict:
    """Train each end-to-end captioner asked for on the caption set's training split (afresh: they train in minutes
    on CPU; a ``zero_shot`` entry is not trained: its checkpoint captions as it is)."""
    lay = run.layout
    result = {}
    for system, entry in run.captioners.items():
        if entry["zero_shot"]:
            result[system] = {"status": "zero-shot", "model": entry["checkpoint"]}
            continue
        out = lay.captioner(system)
        _call(commands, "captioners", train_captioner, config=entry["config"], file_options=entry["file"],
              user=entry["options"], arch=END_TO_END[system], captions=lay.references, images=lay.images_dir,
              out=out, overwrite=True, progress=run.progress)
        m = read_json(out / "metrics.json")  # the stamp keeps the figures; the per-epoch history stays in the folder
        result[system] = {"model": str(out), **{k: m.get(k) for k in ("selected_epoch", "best_val_loss",
                                                                      "train_seconds", "total_seconds")}}
    return result or {"status": "not asked for"}


def stage_captions(run: Run, fresh: bool, commands: list[str]) -> dict:
    lay = run.layout
    written: dict[str, str] = {}

    def gen(name: str, model: Path, comps: Path, beams: int = 1, consensus: bool = False, pool: int = 0) -> None:
        out = lay.predictions / f"{name}.json"
        mbr = {"consensus": run.consensus, "candidates": run.consensus_candidates} if consensus else {}
        mbr |= {"consensus_pool": pool} if pool else {}
        _call(commands, "captions", generate_captions, model=model, compositions=comps, captions=lay.references,
              split=run.split, out=out, num_beams=beams, **mbr, progress=run.progress, overwrite=True)
        written[name] = str(out)

    if run.wants("pipeline"):
        gen("pipeline", lay.llm("pipeline"), lay.predicted)
    if run.wants("pipeline_beam") and run.num_beams > 1:
        gen(f"pipeline_beam{run.num_beams}", lay.llm("pipeline"), lay.predicted, run.num_beams)
    if run.wants("oracle") and lay.llm("oracle").is_dir() and lay.truth.is_file():
        gen("oracle", lay.llm("oracle"), lay.truth)
    if run.wants("blind") and lay.llm("blind").is_dir():
        gen("blind", lay.llm("blind"), lay.predicted)
    if run.wants("pipeline_mbr"):
        gen("pipeline_mbr", lay.llm("pipeline"), lay.predicted, consensus=True)
    if run.wants("pipeline_pool"):  # the same neighbours as nearest_consensus votes among
        gen("pipeline_pool", lay.llm("pipeline"), lay.predicted, consensus=True, pool=run.retrieval_k)
    for name, mbr in (("pipeline_rag", False), ("pipeline_rag_mbr", True)):
        if run.wants(name):
            gen(name, lay.llm("pipeline_rag"), lay.predicted, consensus=mbr)
    if run.wants("rag_only"):
        gen("rag_only", lay.llm("rag_only"), lay.predicted)
    for name in ABLATION_SYSTEMS:
        if run.wants(name):
            gen(name, lay.llm(name), lay.predicted)
    for system, entry in run.captioners.items():  # end-to-end: greedy, and beam search as the pipeline's
        model = entry["checkpoint"] if entry["zero_shot"] else lay.captioner(system)
        for beams in sorted({1, run.num_beams}):
            name = system if beams == 1 else f"{system}_beam{beams}"
            out = lay.predictions / f"{name}.json"
            _call(commands, "captions", generate_end_to_end, model=model, captions=lay.references,
                  images=lay.images_dir, arch=END_TO_END[system], split=run.split, out=out, num_beams=beams, progress=run.progress,
                  overwrite=True)
            written[name] = str(out)

    records = {Path(r["image"]).stem: r for r in read_jsonl(lay.predicted)}
    test = CaptionDataset(lay.references, split=run.split, images_dir=lay.images_dir)
    test_recs = [records[Path(it.filename).stem] for it in test]
    if run.wants("template"):
        preds = [{"image_id": it.filename, "caption": template_caption(r)} for it, r in zip(test, test_recs, strict=True)]
        written["template"] = str(atomic.write_json(lay.predictions / "template.json", preds))
    lookups = [(name, k) for name, k in (("nearest", 1), ("nearest_consensus", run.retrieval_k)) if run.wants(name)]
    if lookups:  # one index of the training compositions for both
        train = [it for it in CaptionDataset(lay.references, split="train", images_dir=lay.images_dir)
                 if Path(it.filename).stem in records]
        nn = NearestNeighbour([records[Path(it.filename).stem] for it in train], [it.sentences for it in train],
                              lay.class_table().num_classes, [it.filename for it in train])
    for name, k in lookups:
        preds = [{"image_id": it.filename, "caption": c} for it, c in zip(test, nn.caption(test_recs, k), strict=True)]
        written[name] = str(atomic.write_json(lay.predictions / f"{name}.json", preds))
    references = {}  # the references that need no composition: every training image, whatever its record
    if run.wants("class_oracle") or run.wants("image_nearest"):
        train_all = list(CaptionDataset(lay.references, split="train", images_dir=lay.images_dir))
    if run.wants("class_oracle"):  # the true class's most frequent training caption
        preds = [{"image_id": it.filename, "caption": c} for it, c in zip(test, class_oracle(train_all, test), strict=True)]
        written["class_oracle"] = str(atomic.write_json(lay.predictions / "class_oracle.json", preds))
        references["class_oracle"] = categories_summary(train_all, list(test))
    if run.wants("image_nearest"):  # the nearest training image in the cnn_lstm's encoder space, chosen as nearest
        options = image_nearest_options(run)
        caps = image_nearest(test, train_all, list(test), choose=neighbour_caption, **options, device=run_device(run))
        preds = [{"image_id": it.filename, "caption": c} for it, c in zip(test, caps, strict=True)]
        written["image_nearest"] = str(atomic.write_json(lay.predictions / "image_nearest.json", preds))
        references["image_nearest"] = options
    atomic.write_json(lay.systems_json, written)
    return {"split": run.split, "predictions": written, **({"references": references} if references else {})}


IMAGE_NEAREST_OPTIONS = ("encoder", "encoder_weights", "encoder_stride", "image_size", "seed")


def _cnn_lstm_options(run: Run) -> dict:
    """The cnn_lstm captioner's captioners.train options: its ``captioners:`` entry when the run has one, else the
    default config (:data:`CAPTIONER_CONFIGS`), over captioners.train's defaults."""
    entry = run.captioners.get("cnn_lstm")
    merged = ({**entry["file"], **entry["options"]} if entry
              else config_kwargs(train_captioner, CAPTIONER_CONFIGS["cnn_lstm"]))
    defaults = {k: p.default for k, p in inspect.signature(train_captioner).parameters.items()}
    return {**defaults, **merged}


def image_nearest_options(run: Run) -> dict:
    """The encoder options image_nearest searches with: the cnn_lstm captioner's (:func:`_cnn_lstm_options`)."""
    options = _cnn_lstm_options(run)
    return {k: options[k] for k in IMAGE_NEAREST_OPTIONS}


def run_device(run: Run) -> str:
    """The device the cnn_lstm captioner is set to (auto: CUDA when there is one); not part of any fingerprint."""
    return str(_cnn_lstm_options(run)["device"])


def stage_score(run: Run, fresh: bool, commands: list[str]) -> dict:
    lay = run.layout
    systems = read_json(lay.systems_json)
    scores = _call(commands, "score", score_captions, references=lay.references, out=lay.scores,
                   predictions=[Path(p) for p in systems.values()], names=list(systems), split=run.split, human=True,
                   overwrite=True)
    return {"split": run.split, "overall": scores.get("overall")}


def stage_report(run: Run, fresh: bool, commands: list[str]) -> dict:
    return {"report": str(write_report(run.layout))}


StageFn = Callable[[Run, bool, list], dict]
STAGE_FUNCS: dict[str, StageFn] = {
    "data": stage_data, "segmentation": stage_segmentation, "scenes": stage_scenes, "masks": stage_masks,
    "compositions": stage_compositions,
    **{name: functools.partial(stage_llm, stage=name) for name in LLM_SPECS},
    "captioners": stage_captioners, "captions": stage_captions, "score": stage_score, "report": stage_report,
}


# ---------------------------------------------------------------------------------------------------- driver
def own_options(run: Run, stage: str) -> dict:
    """Every option a stage reads (what it reads from earlier stages is in their digests)."""
    lay = run.layout
    if stage == "data":
        return {"data_root": run.data_root, "drone_root": lay.drone_root, "captions_root": lay.captions_root,
                "captions_json": lay.captions_json, "images_dir": lay.images_dir, "generate": run.generate,
                "synthetic": _synthetic_options(run) if run.generate else None,
                "drone_needed": lay.checkpoint_given is None}
    if stage == "segmentation":
        if lay.checkpoint_given is not None:  # its files are the stage's outputs: their digest is checked too
            return {"checkpoint": lay.checkpoint_given}
        return {"config": run.segmentation_file, "options": run.segmentation,
                "classes": load_class_table(run.classes).to_dict(), "caption_scale": run.caption_scale,
                "split": run.split}
    if stage == "scenes":
        return ({"scene_head": run.scene_head, "caption_scale": run.caption_scale,
                 "scene_encoder": run.scene_encoder, **({"scene_views": run.scene_views} if run.scene_views != 1 else {})}
                if run.scene_head else {})
    if stage == "masks":  # scene_head only when on: without it, the fingerprint is as it was before the option
        return {"caption_scale": run.caption_scale, **({"scene_head": True} if run.scene_head else {})}
    if stage == "compositions":
        return {"config": run.composition_file}
    if stage in LLM_SPECS:
        wanted = {"wanted": _wanted(run, stage)} if LLM_SPECS[stage].serves else {}  # skipped when not wanted
        return {"config": run.llm_file, "options": _llm_options(run, stage), "outputs": FINETUNE_OUTPUTS, **wanted}
    if stage == "captioners":
        return {system: {"file": e["file"], "options": e["options"], "zero_shot": e["zero_shot"]}
                for system, e in run.captioners.items()}
    if stage == "captions":
        image = {"image_nearest": image_nearest_options(run)} if run.wants("image_nearest") else {}
        return {"num_beams": run.num_beams, "systems": sorted(run.systems), "split": run.split,
                "consensus": [run.consensus, run.consensus_candidates], "retrieval_k": run.retrieval_k,
                "zero_shot": {s: e["checkpoint"] for s, e in run.captioners.items() if e["zero_shot"]}, **image}
    if stage == "score":
        return {"split": run.split}
    return {}


def fingerprint(run: Run, stage: str) -> str:
    """A stage's fingerprint: its own options and the digests its upstream stages recorded, hashed. The optional
    stages (the scenes stage, the scene-ablation LLMs) count upstream only when they run (:func:`_runs`)."""
    lay = run.layout
    upstream = [u for u in UPSTREAM[stage] if u not in OPTIONAL_UPSTREAM or _runs(run, u)]
    blob = json.dumps({"stage": stage, "options": own_options(run, stage),
                       "upstream": {u: lay.read_stamp(u).get("digest") for u in upstream}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _runs(run: Run, stage: str) -> bool:
    """Whether an optional stage (:data:`OPTIONAL_UPSTREAM`) does any work in this run: off, it writes nothing, and the
    fingerprints of the stages after it are as they were before it existed."""
    return run.scene_head if stage == "scenes" else _wanted(run, stage)


def _forced(force: list[str] | None, from_stage: str | None, only: str | None = None) -> set[str]:
    """The stages the user asked to redo afresh: ``force``, ``only``, and with ``from_stage`` it and every later one."""
    todo = set(force or []) | ({only} if only else set())
    return todo | (set(STAGES[STAGES.index(from_stage):]) if from_stage else set())


def _why(stage: str, forced: set[str], before: dict, fingerprint_now: str, started: dict, fresh: bool) -> str:
    if stage in forced:
        return "forced: afresh"
    if before.get("fingerprint") == fingerprint_now:
        return "its outputs changed on disk: afresh"
    if before:
        return "its options or inputs changed: afresh"
    if not fresh:
        return "resuming an interrupted run"
    return "options changed since an interrupted run: afresh" if started else "not finished before: afresh"


def execute(run: Run, force: list[str] | None = None, from_stage: str | None = None,
            only: str | None = None, rows: list[dict] | None = None) -> list[dict]:
    """Run the chain in order, stamping each stage when done; returns one summary row per stage.

    A stage is skipped when it is not forced, its stamp holds its current fingerprint (computed now, from the
    digests the stages before it recorded) and its outputs still have the digest it recorded. ``only`` runs that
    one stage and no other. A stage that runs does so afresh (replacing its outputs) when forced or when it did not
    start with its current fingerprint; otherwise it resumes an interrupted attempt.

    The rows are appended to ``rows`` (when given) as the stages go, a stage that raises with status ``failed`` (or
    ``interrupted``), so that a caller can summarise a run that stopped. Once the compositions exist, their health
    flags (composition.health) are printed, when there are any.
    """
    lay = run.layout
    lay.stamps.mkdir(parents=True, exist_ok=True)
    forced = _forced(force, from_stage, only)
    rows = [] if rows is None else rows
    for stage in STAGES:
        if stage == "llm" and (not only or only == "compositions"):  # the compositions are there: any flags now
            warning = health_line(lay)
            if warning:
                print(f"\n{warning}", flush=True)
        before = lay.read_stamp(stage)
        if only and stage != only:
            rows.append({"stage": stage, "status": "done before" if before else "not run",
                         "seconds": before.get("seconds")})
            continue
        now = fingerprint(run, stage)
        if stage not in forced and before.get("fingerprint") == now and before.get("digest") == lay.digest(stage):
            rows.append({"stage": stage, "status": "done before", "seconds": before.get("seconds")})
            continue
        lay.stamp(stage).unlink(missing_ok=True)
        started = read_json(lay.started(stage))
        fresh = stage in forced or started.get("fingerprint") != now
        atomic.write_json(lay.started(stage), {"stage": stage, "fingerprint": now,
                                               "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        print(f"\n=== stage {stage} ({_why(stage, forced, before, now, started, fresh)}) ===", flush=True)
        commands: list[str] = []
        t0 = time.perf_counter()
        try:
            result = STAGE_FUNCS[stage](run, fresh, commands)
        except BaseException as e:
            rows.append({"stage": stage, "status": "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                         "seconds": round(time.perf_counter() - t0, 1)})
            raise
        seconds = round(time.perf_counter() - t0, 1)
        atomic.write_json(lay.stamp(stage), {"stage": stage, "fingerprint": now, "digest": lay.digest(stage),
                                             "seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                             "commands": commands, "result": _jsonable(result)})
        lay.started(stage).unlink(missing_ok=True)
        rows.append({"stage": stage, "status": "ran", "seconds": seconds})
    return rows


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def summary_table(rows: list[dict], layout: Layout, results: bool = True) -> str:
    """The console summary: each stage's status and time, then the results (read from the run folder; ``results``
    false leaves them out, as for a run that stopped before its scores), and one warning line when the predicted
    compositions are degenerate (composition.health's flags)."""
    lines = [f"{'stage':<14}{'status':<14}{'seconds':>9}"]
    for r in rows:
        sec = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(f"{r['stage']:<14}{r['status']:<14}{sec:>9}")
    scores = results_rows(layout) if results else []
    warning = health_line(layout)
    return "\n".join(lines + ([""] + scores if scores else []) + (["", warning] if warning else []))


def _checked(problems: list[str], fn: Callable[..., Any], options: dict, source: str) -> dict:
    """:func:`check_options`, collecting its problems instead of raising (so that all are reported together)."""
    try:
        return check_options(fn, options, source)
    except ConfigError as e:
        problems.extend(e.problems)
        return {}


def _config_file(problems: list[str], fn: Callable[..., Any], name: str, path: Path) -> dict:
    try:
        return config_kwargs(fn, path)
    except ConfigError as e:
        problems.extend(f"{name}: {p}" for p in e.problems)
        return {}


def section_sources(args: Sequence[str]) -> dict[str, str]:
    """Where each stage section of a command line comes from, for messages: its flag, or the --config file."""
    config, flagged = None, set()
    for i, tok in enumerate(args):
        flag, eq, value = tok.partition("=")
        if flag == "--config":
            config = value if eq else (args[i + 1] if i + 1 < len(args) else None)
        elif flag.lstrip("-") in (*SECTIONS, "captioners") and flag.startswith("--"):
            flagged.add(flag[2:])
    return {name: f"command line, --{name}" if name in flagged
            else f"{config}, section {name}" if config else f"option {name}" for name in (*SECTIONS, "captioners")}


def captioner_entries(problems: list[str], systems: Sequence[str], entries: dict | None, source: str) -> dict:
    """The ``captioners:`` entries of the end-to-end systems asked for, checked like captioners.train's flags: each
    may name a ``config`` (default :data:`CAPTIONER_CONFIGS`), set ``zero_shot: true`` (caption with the pretrained
    checkpoint it names, untrained) and any captioners.train option; ``arch`` follows from the system's name."""
    entries = entries or {}
    problems += [f"{source}: unknown system {k!r}; the end-to-end systems are {', '.join(END_TO_END)}"
                 for k in entries if k not in END_TO_END]
    out = {}
    for system in dict.fromkeys(s for s in systems if s in END_TO_END):
        where = f"{source}.{system}"
        entry = entries.get(system) or {}
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping of captioners.train options, got {entry!r}")
            continue
        entry = dict(entry)
        config, zero_shot = entry.pop("config", CAPTIONER_CONFIGS[system]), entry.pop("zero_shot", False)
        if not isinstance(zero_shot, bool):
            problems.append(f"{where}: zero_shot must be true or false, got {zero_shot!r}")
        if entry.pop("arch", END_TO_END[system]) != END_TO_END[system]:
            problems.append(f"{where}: arch follows from the system's name ({END_TO_END[system]}); remove it")
        file = _config_file(problems, train_captioner, f"{where}.config", Path(config)) if config else {}
        if file.get("arch", END_TO_END[system]) != END_TO_END[system]:
            problems.append(f"{where}: config {config} is for arch {file['arch']}; {system} is "
                            f"{END_TO_END[system]}: name a config of that arch")
        options = _checked(problems, train_captioner, entry, where)
        merged = {**file, **options}
        if END_TO_END[system] == "cnn-lstm" and not zero_shot:  # its encoder's weights load now, not after hours
            defaults = inspect.signature(train_captioner).parameters
            problems += [f"{where}: {p}" for p in captioner_weights_problems(
                merged.get("encoder", defaults["encoder"].default),
                merged.get("encoder_weights", defaults["encoder_weights"].default))]
        checkpoint = merged.get(PRETRAINED_OPTION)
        if (zero_shot or system == "blip") and not checkpoint:
            problems.append(f"{where}: {'zero_shot' if zero_shot else system} needs a pretrained checkpoint; set "
                            f"{PRETRAINED_OPTION} to its folder (or hub id), e.g. config: configs/captioners/blip.yaml")
        out[system] = {"config": Path(config) if config else None, "file": file, "options": options,
                       "zero_shot": bool(zero_shot), "checkpoint": str(checkpoint) if checkpoint else None}
    return out


def make_run(
    run_dir: Path, data_root: Path, drone_root: Path | None, captions_root: Path | None, captions_json: str | None,
    images_dir: str | None, generate: bool, synthetic: dict | None, classes: str, segmentation_config: Path,
    segmentation_checkpoint: Path | None, segmentation: dict | None, caption_scale: float, composition_config: Path,
    llm_config: Path, llm: dict | None, num_beams: int, systems: Sequence[str], split: str, progress: bool,
    captioners: dict | None = None, sources: dict[str, str] | None = None, retrieval_k: int = 5,
    retrieval_captions: int = 1, consensus: int = 5, consensus_candidates: str = "beam", scene_head: bool = False,
    scene_encoder: str = "segmenter", scene_views: int = 1,
) -> Run:
    """Check every option of every stage (all problems in one :class:`ConfigError`) and return the run."""
    sources = {**section_sources([]), **(sources or {})}
    problems = [f"systems: unknown system {s!r}; use {', '.join(SYSTEMS)}" for s in systems if s not in SYSTEMS]
    if num_beams < 1:
        problems.append(f"num_beams must be >= 1, got {num_beams}")
    if retrieval_k < 1:
        problems.append(f"retrieval_k must be >= 1 (the neighbours the pipeline_rag and rag_only prompts show, and "
                        "nearest_consensus and pipeline_pool vote with), "
                        f"got {retrieval_k}")
    if retrieval_captions < 1:
        problems.append(f"retrieval_captions must be >= 1, got {retrieval_captions}")
    if scene_views not in SCENE_VIEWS:
        problems.append(f"scene_views must be one of {', '.join(map(str, SCENE_VIEWS))} (the image alone, its 4 "
                        f"rotations, or those and their mirror images), got {scene_views}")
    if consensus < 2:
        problems.append(f"consensus must be >= 2 (candidates per image of the *_mbr systems and pipeline_pool), "
                        f"got {consensus}")
    sections = {name: _checked(problems, fn, value or {}, sources[name])
                for (name, fn), value in zip(SECTIONS.items(), (synthetic, segmentation, llm), strict=True)}
    seg_file = _config_file(problems, train_segmenter, "segmentation_config", Path(segmentation_config))
    comp_file = _config_file(problems, extract_compositions, "composition_config", Path(composition_config))
    llm_file = _config_file(problems, finetune_llm, "llm_config", Path(llm_config))
    try:
        load_class_table(classes)
    except ConfigError as e:
        problems.extend(f"classes: {p}" for p in e.problems)
    given = Path(segmentation_checkpoint) if segmentation_checkpoint else None
    if given is not None:
        missing = [f for f in CHECKPOINT_FILES[:2] if not (given / f).is_file()]
        if missing:
            problems.append(f"segmentation_checkpoint: {given} has no {' or '.join(missing)}; give a folder written "
                            "by python -m segmentation.train, or leave segmentation_checkpoint unset to train one")
    # weights named by the user (imagenet, a hub id) must be loadable now, not after the segmentation training;
    # the training data's form (labelled sources with caption_gsd, or the one drone set) too
    if given is None:
        seg = {**seg_file, **sections["segmentation"]}
        if seg.get("sources") is not None:
            problems += [f"segmentation: {p}" for p in form_problems(seg["sources"], seg.get("caption_gsd"), None, None)]
        problems += [f"segmentation: {p}" for p in encoder_weights_problems(
            {**seg_file, **sections["segmentation"]}.get("encoder_weights"))]
    llm_all = {**llm_file, **sections["llm"]}
    problems += [f"llm: {p}" for p in base_model_problems(llm_all.get("base_model", "tiny"))]
    if llm_all.get("retrieval_k"):
        problems.append(f"llm: retrieval_k {llm_all['retrieval_k']} in {sources['llm']} (or llm_config): in the "
                        "pipeline, retrieval is per system; set retrieval_k at the top level (pipeline_rag and "
                        "rag_only use it; pipeline, oracle and blind train without retrieval)")
    end_to_end = captioner_entries(problems, systems, captioners, sources["captioners"])
    if problems:
        raise ConfigError(problems)
    layout = Layout(
        run_dir=Path(run_dir),
        captions_root=Path(captions_root) if captions_root else Path(data_root) / "rsicd",
        drone_root=Path(drone_root) if drone_root else Path(data_root) / "drone",
        captions_json=captions_json, images_dir=images_dir, checkpoint_given=given,
    )
    if scene_head and layout.references.is_file():  # the categories the scene head learns, before any stage runs
        try:
            scene_classes(CaptionDataset(layout.references, split="train", images_dir=layout.images_dir),
                          layout.references, "train")
        except (DataError, ConfigError) as e:
            raise ConfigError(f"scene_head: {e}; or set scene_head: false") from e
    return Run(
        layout=layout, data_root=Path(data_root), generate=generate, synthetic=sections["synthetic"],
        classes=classes, segmentation_config=Path(segmentation_config), segmentation_file=seg_file,
        segmentation=sections["segmentation"], caption_scale=caption_scale, composition_config=Path(composition_config),
        composition_file=comp_file, llm_config=Path(llm_config), llm_file=llm_file, llm=sections["llm"],
        num_beams=num_beams, retrieval_k=retrieval_k, retrieval_captions=retrieval_captions, consensus=consensus,
        consensus_candidates=consensus_candidates, systems=tuple(systems), split=split, progress=progress,
        captioners=end_to_end, scene_head=scene_head, scene_encoder=scene_encoder, scene_views=scene_views,
    )


# ---------------------------------------------------------------------------------------------------- inputs
# Checked once the options are: every file a stage will read, with the options it will read it with, so that a run
# does not stop at its last stage for want of a file it could have looked at before its first (a caption set whose
# images are elsewhere cost one 46-minute run its report).
RETRIEVAL_USERS = ("pipeline_rag", "pipeline_rag_mbr", "rag_only", "nearest_consensus", "pipeline_pool")
SHOWN = 5  # file names shown in a message


def may_run(run: Run, force: list[str] | None = None, from_stage: str | None = None,
            only: str | None = None) -> set[str]:
    """The stages that may run now (:func:`execute` decides each in turn): ``only``'s, or those forced, those not
    finished with their current fingerprint and outputs, and every stage reading one of these."""
    if only:
        return {only}
    lay, forced, out = run.layout, _forced(force, from_stage), set()
    for stage in STAGES:
        upstream = [u for u in UPSTREAM[stage] if u not in OPTIONAL_UPSTREAM or _runs(run, u)]
        before = lay.read_stamp(stage)
        if (stage in forced or any(u in out for u in upstream) or before.get("fingerprint") != fingerprint(run, stage)
                or before.get("digest") != lay.digest(stage)):
            out.add(stage)
    return out


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
    users = [s for s in RETRIEVAL_USERS if run.wants(s)]
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
            weights = (read_checkpoint_config(lay.checkpoint_given).get("training") or {}).get("encoder_weights")
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
                if END_TO_END[s] == "cnn-lstm" and not e["zero_shot"] and "captioners" in stages}
    if run.wants("image_nearest") and "cnn_lstm" not in encoders and "captions" in stages:
        encoders["image_nearest"] = _cnn_lstm_options(run)
    defaults = inspect.signature(train_captioner).parameters
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
        if (entry["zero_shot"] or system == "blip") and checkpoint and not is_hub_id(checkpoint) and \
                stages & {"captioners", "captions"}:
            try:
                model_arch(checkpoint)
            except SegcapError as e:
                problems.append(f"captioners.{system}: {e}")
    return problems


def main(
    run_dir: Path = Path("runs/demo"),
    data_root: Path = Path("data/synthetic"),
    drone_root: Path | None = None,
    captions_root: Path | None = None,
    captions_json: str | None = None,
    images_dir: str | None = None,
    generate: bool = True,
    synthetic: dict | None = None,
    classes: str = "seed10",
    segmentation_config: Path = REPO / "configs" / "segmentation.yaml",
    segmentation_checkpoint: Path | None = None,
    segmentation: dict | None = None,
    caption_scale: float = 1.0,
    composition_config: Path = REPO / "configs" / "composition.yaml",
    llm_config: Path = REPO / "configs" / "llm" / "tiny.yaml",
    llm: dict | None = None,
    num_beams: int = 3,
    retrieval_k: int = 5,
    retrieval_captions: int = 1,
    consensus: int = 5,
    consensus_candidates: Literal["beam", "sample"] = "beam",
    systems: tuple[str, ...] = DEFAULT_SYSTEMS,
    captioners: dict | None = None,
    scene_head: bool = False,
    scene_encoder: Literal["segmenter", "pretrained"] = "segmenter",
    scene_views: int = 1,
    split: Literal["test", "val"] = "test",
    force: list[str] | None = None,
    from_stage: str | None = None,
    only: str | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run the whole chain (data, segmentation, masks, compositions, LLMs, captions, scores, report).

    Args:
        run_dir: folder for every output of the run; a rerun skips finished stages and resumes the rest.
        data_root: folder holding drone/ and rsicd/ (written by synthetic.generate when absent and generate is on).
        drone_root: drone-format segmentation set (default: data_root/drone).
        captions_root: caption set in RSICD format (default: data_root/rsicd).
        captions_json: name of the caption JSON inside captions_root; null: found there (dataset_rsicd.json, else
            the one dataset*.json, as UCM-captions' dataset_ucm.json).
        images_dir: folder of the caption images inside captions_root; null: found there (the first of RSICD_images,
            imgs, UCM_images, images).
        generate: write the synthetic sets to data_root when they are absent.
        synthetic: options of synthetic.generate (seed, drone_images, caption_images, ...), in the YAML config.
        classes: class table for segmentation and composition (seed10, aerial10, or a YAML path).
        segmentation_config: YAML options of segmentation.train.
        segmentation_checkpoint: an existing segmentation checkpoint folder; skips training.
        segmentation: options of segmentation.train overriding segmentation_config, in the YAML config.
        caption_scale: resize factor for the caption images before segmenting (ground resolution, aspect kept).
        composition_config: YAML options of composition.extract (thresholds).
        llm_config: YAML options of llm.finetune (base model, quantization, LoRA, epochs...).
        llm: options of llm.finetune overriding llm_config (e.g. base_model, quantize), in the YAML config.
        num_beams: beam width of the pipeline's second decoding (1: greedy only).
        retrieval_k: neighbours whose captions the retrieval-augmented prompts show (pipeline_rag, rag_only), and
            whose captions nearest_consensus and pipeline_pool choose from.
        retrieval_captions: captions per neighbour in those prompts.
        consensus: candidates per image of consensus decoding (pipeline_mbr, pipeline_pool, pipeline_rag_mbr).
        consensus_candidates: where the candidates come from: beam (the N best of a beam search) or sample.
        systems: what to compare: the chain (pipeline, pipeline_beam), its references (oracle, template, nearest,
            nearest_consensus, blind), the chain with retrieval and/or consensus decoding (pipeline_rag, pipeline_mbr,
            pipeline_pool, pipeline_rag_mbr) and the retrieval-only ablation (rag_only), the references without a
            chain (class_oracle: the true class's most frequent training caption; image_nearest: the nearest
            training image in the cnn_lstm encoder's space), the scene ablations (pipeline_scene: an LLM trained on
            the scene line alone; pipeline_composition: on the composition without it), and end-to-end captioners
            (cnn_lstm, vit_gpt2, blip), each captioned greedy and with num_beams.
        captioners: per end-to-end system, captioners.train options (config: a YAML of them; zero_shot: true to
            caption with a pretrained checkpoint untrained), in the YAML config.
        scene_head: fit a scene head on the segmenter's encoder (the caption set's categories; stage scenes, into
            run_dir/scenes) and put each image's top scenes into its composition record.
        scene_encoder: whose features the scene head reads: segmenter (the trained segmenter's encoder) or
            pretrained (the encoder weights the segmenter started from, frozen and saved with the head; on
            UCM-captions 0.91 validation accuracy against 0.68 for a segmenter fine-tuned on 2 LoveDA tiles).
        scene_views: 1, 4 or 8 views of each image for the scene head (the image, its 4 rotations, or those and
            their mirror images): fitted on every view, judging by their mean (on UCM-captions test accuracy 0.886
            with 1, 0.914 with 8; each view costs the encoder one more pass over every image).
        split: split of the caption set to caption and score (and to measure the segmenter on).
        force: stages to run again afresh (data, segmentation, scenes, masks, compositions, llm, oracle, blind, rag,
            rag_only, scene_only, composition_only, captioners, captions, score, report); the stages reading their outputs run again too.
        from_stage: run this stage and every later one again.
        only: run just this stage (its inputs must exist).
        progress: show progress bars.
    """
    options = dict(
        run_dir=run_dir, data_root=data_root, drone_root=drone_root, captions_root=captions_root,
        captions_json=captions_json, images_dir=images_dir, generate=generate, synthetic=synthetic, classes=classes,
        segmentation_config=segmentation_config, segmentation_checkpoint=segmentation_checkpoint,
        segmentation=segmentation, caption_scale=caption_scale, composition_config=composition_config,
        llm_config=llm_config, llm=llm, num_beams=num_beams, systems=systems, split=split, progress=progress,
        captioners=captioners, retrieval_k=retrieval_k, retrieval_captions=retrieval_captions, consensus=consensus,
        consensus_candidates=consensus_candidates, scene_head=scene_head, scene_encoder=scene_encoder,
        scene_views=scene_views,
    )
    return _main(options, force, from_stage, only)


def _main(options: dict[str, Any], force: list[str] | None, from_stage: str | None, only: str | None,
          sources: dict[str, str] | None = None) -> list[dict]:
    """:func:`main`: ``options`` go to :func:`make_run`; ``sources`` name where the stage sections came from."""
    problems = []
    for name, value in (("force", force or []), ("from_stage", [from_stage] if from_stage else []),
                        ("only", [only] if only else [])):
        problems += [f"{name}: unknown stage {s!r}; stages are {', '.join(STAGES)}" for s in value if s not in STAGES]
    if only and (force or from_stage):
        problems.append("only cannot be combined with force or from_stage")
    try:
        run = make_run(**options, sources=sources)
    except ConfigError as e:
        problems += e.problems
    if problems:
        raise ConfigError(problems)
    problems = input_problems(run, may_run(run, force, from_stage, only))  # what the stages read, before them
    if problems:
        raise ConfigError(problems)

    atomic.check_writable(run.layout.run_dir, False, "run folder", folder=True)
    if only:
        _check_inputs(run.layout, only)
    t0 = time.perf_counter()
    rows: list[dict] = []
    try:
        with atomic.folder_lock(run.layout.run_dir, "run folder"):  # one pipeline.run per run folder at a time
            run.layout.run_dir.mkdir(parents=True, exist_ok=True)
            execute(run, force, from_stage, only, rows)
    except BaseException:  # an error or Ctrl-C in a stage: what finished, and the health flags, before the error
        if rows:
            where = ("in" if rows[-1]["status"] in ("failed", "interrupted") else "after") + f" stage {rows[-1]['stage']}"
            print("\n" + summary_table(rows, run.layout, results=False), flush=True)
            print(f"\nthe run stopped {where}; the stages finished before it are kept: rerun the same command to go on "
                  "from there", flush=True)
        raise
    print("\n" + summary_table(rows, run.layout))
    print(f"\nrun folder: {run.layout.run_dir}  ({time.perf_counter() - t0:.0f} s)  report: {run.layout.report}")
    return rows


def _check_inputs(layout: Layout, stage: str) -> None:
    """For --only: every earlier stage must have finished."""
    missing = [s for s in STAGES[: STAGES.index(stage)] if not layout.stamp(s).is_file()]
    if missing:
        raise ConfigError(f"--only {stage}: earlier stage(s) {', '.join(missing)} have not finished in "
                          f"{layout.run_dir}; run without --only first")


def cli(args: Sequence[str] | None = None) -> Any:
    """``python -m pipeline.run``: :func:`main`'s options from flags and ``--config``; a problem in a stage section
    names the file (or flag) it came from."""
    argv = list(sys.argv[1:] if args is None else args)
    sources = section_sources(argv)

    @functools.wraps(main)
    def entry(force: list[str] | None = None, from_stage: str | None = None, only: str | None = None, **options):
        return _main(options, force, from_stage, only, sources)

    return run_cli(entry, argv, aliases=ALIASES)


if __name__ == "__main__":
    cli()
