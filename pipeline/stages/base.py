"""What a stage is, the table of stages, and the options every stage reads (:class:`Run`).

A :class:`Stage` declares its name, the stages whose outputs it reads (``upstream``), its outputs (what later stages
read, and what its digest covers), an ``options`` function giving the options dataclass the stage reads for this
run, and ``run``, its body. Every option that changes what a stage computes belongs in its options object; the body
may also read the run's layout (paths), ``progress`` and where its config files are. The executor
(:mod:`pipeline.executor`) fingerprints a stage by hashing its options object whole and its upstream stages' digests,
so no list of options is kept by hand.

Hashing an options object (:func:`hashed`) takes every field, except that a field made with :func:`added` (an
option added after runs existed) is left out while it holds its default, so that adding an option does not redo
the stages of every run made before it. A stage may return None for "does nothing in this run" (hashed as no
options).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline.layout import Layout
from pipeline.systems import default_systems
from segcap.cli import check_options
from segcap.options import AtLeastTwo, Group, PositiveFloat, PositiveInt
from segmentation.model import SceneViews

ADDED = "added"


def added(default: Any, **kw: Any) -> Any:
    """A field added after runs existed: hashed only once set away from ``default``."""
    return dataclasses.field(default=default, metadata={ADDED: True}, **kw)


def hashed(options: Any) -> Any:
    """What a stage's fingerprint holds of its options: a dataclass's fields (less :func:`added` ones at their
    default), a mapping's values, recursively; None (the stage does nothing) is {}."""
    return {} if options is None else _plain(options)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get(ADDED) and getattr(value, f.name) == f.default)}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class PipelineOptions(Group):
    """Pipeline: the options of ``python -m pipeline.run`` (its sections checked and typed into a :class:`Run`).

    Attributes:
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
        progress: show progress bars.
    """

    run_dir: Path = Path("runs/demo")
    data_root: Path = Path("data/synthetic")
    drone_root: Path | None = None
    captions_root: Path | None = None
    captions_json: str | None = None
    images_dir: str | None = None
    generate: bool = True
    synthetic: dict | None = None
    classes: str = "seed10"
    segmentation_config: Path = REPO / "configs" / "segmentation.yaml"
    segmentation_checkpoint: Path | None = None
    segmentation: dict | None = None
    caption_scale: PositiveFloat = 1.0
    composition_config: Path = REPO / "configs" / "composition.yaml"
    llm_config: Path = REPO / "configs" / "llm" / "tiny.yaml"
    llm: dict | None = None
    num_beams: PositiveInt = 3
    retrieval_k: PositiveInt = 5
    retrieval_captions: PositiveInt = 1
    consensus: AtLeastTwo = 5
    consensus_candidates: Literal["beam", "sample"] = "beam"
    systems: tuple[str, ...] = dataclasses.field(default_factory=default_systems)
    captioners: dict | None = None
    scene_head: bool = False
    scene_encoder: Literal["segmenter", "pretrained"] = "segmenter"
    scene_views: SceneViews = 1
    split: Literal["test", "val"] = "test"
    progress: bool = True


@dataclass(frozen=True)
class Run(PipelineOptions):
    """Everything the stages read: the pipeline's options (:class:`PipelineOptions`), checked and typed before any
    stage runs, and what :func:`pipeline.run.make_run` derived from them.

    ``layout`` holds the run's paths; ``*_file`` are the checked options of the entry points' YAML configs;
    ``synthetic``, ``segmentation`` and ``llm`` are the pipeline config's sections checked against their entry
    points (they override the files). ``captioners`` holds, for each end-to-end system asked for, its config file
    (``config``), that file's checked options (``file``) and the entry's (``options``).
    """

    layout: Layout | None = None
    segmentation_file: dict = dataclasses.field(default_factory=dict)
    composition_file: dict = dataclasses.field(default_factory=dict)
    llm_file: dict = dataclasses.field(default_factory=dict)
    synthetic: dict = dataclasses.field(default_factory=dict)
    segmentation: dict = dataclasses.field(default_factory=dict)
    llm: dict = dataclasses.field(default_factory=dict)
    captioners: dict[str, dict] = dataclasses.field(default_factory=dict)
    _memo: dict = dataclasses.field(default_factory=dict, init=False, repr=False, compare=False)

    def memo(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()``, once per run: each stage's options object (asked for by its fingerprint, more than once per
        run, and by its body) and what the options read from files (the cnn_lstm captioner's config)."""
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def stage_options(self, stage: str) -> Any:
        """The options object of ``stage`` for this run (:attr:`Stage.options`, built once)."""
        return self.memo(("options", stage), lambda: STAGES[stage].options(self))

    def wants(self, system: str) -> bool:
        return system in self.systems


@dataclass(frozen=True)
class Stage:
    """One stage of the chain (see the module docstring). ``run(run, options, fresh, commands) -> result``:
    ``fresh`` says whether to replace its outputs (True) or resume an interrupted attempt (False); it appends the
    equivalent stand-alone commands to ``commands``; the result goes into its stamp. ``active`` (optional stages
    only): whether it does any work in this run; one that does none counts upstream of nobody, so the fingerprints
    of the stages after it are as they were before it existed."""

    name: str
    upstream: tuple[str, ...] | Callable[[], tuple[str, ...]]
    outputs: Callable[[Layout], list[Path]]
    options: Callable[[Run], Any]
    run: Callable[[Run, Any, bool, list[str]], dict]
    active: Callable[[Run], bool] | None = None

    def reads(self) -> tuple[str, ...]:
        """The stages whose outputs this one reads (all that may; :func:`pipeline.executor.upstream` leaves out the
        optional ones that do nothing in a run)."""
        return self.upstream() if callable(self.upstream) else self.upstream


STAGES: dict[str, Stage] = {}  # in the order they run; filled by the modules of pipeline.stages


def register(stage: Stage, before: str | None = None) -> Stage:
    """Add ``stage`` to :data:`STAGES`, at the end or just before the stage ``before``."""
    if stage.name in STAGES:
        raise ValueError(f"stage {stage.name!r} exists")
    if before is None:
        STAGES[stage.name] = stage
    else:
        items = list(STAGES.items())
        at = [n for n, _ in items].index(before)
        STAGES.clear()
        STAGES.update(items[:at] + [(stage.name, stage)] + items[at:])
    return stage


# ---------------------------------------------------------------------------------------------------- calls
def as_command(module: str, kwargs: dict[str, Any]) -> str:
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


def call(commands: list[str], stage: str, fn: Callable[..., Any], config: Path | None = None,
         file_options: dict | None = None, user: dict | None = None, **overrides) -> Any:
    """Call an entry point's ``main`` with its YAML config's options (``file_options``, read from ``config``), then
    the pipeline's ``overrides`` (None included: it clears a config value), then the ``user``'s section of the
    pipeline config (which wins), checked together by the entry point's typed check; log the command."""
    merged = {**(file_options or {}), **overrides, **(user or {})}
    kwargs = check_options(fn, merged, f"stage {stage} ({fn.__module__})")
    shown = {"config": config, **overrides, **(user or {})} if config else dict(merged)
    commands.append(as_command(fn.__module__, shown))
    return fn(**kwargs)
