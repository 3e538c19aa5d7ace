"""The whole chain on one caption set, stage by stage: what ``make demo`` runs.

    python -m pipeline.run --config configs/pipeline/synthetic.yaml                 # the demo (synthetic data)
    python -m pipeline.run --config configs/pipeline/synthetic.yaml --force llm     # redo one stage
    python -m pipeline.run --config configs/pipeline/synthetic.yaml --from compositions   # redo from a stage on
    python -m pipeline.run --config configs/pipeline/synthetic.yaml --only score    # one stage, outputs upstream
    python -m pipeline.run --config configs/pipeline/rsicd.yaml                     # real data, Llama-2 + QLoRA

The stages, in the order they run, are :data:`pipeline.stages.STAGES` (one module each, under ``pipeline/stages/``);
the systems they compare are :data:`pipeline.systems.SYSTEMS`; :mod:`pipeline.executor` runs the stages, each
only when its fingerprint (its options object and its upstream outputs' digests) or its outputs changed. Each
stage writes under ``run_dir`` and a stamp ``stages/<name>.json`` when it has finished (:mod:`pipeline.layout`).

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
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aerialdata.captionset import CaptionDataset
from aerialdata.classes import load_class_table
from captioners.encoders import encoder_weights_problems as captioner_weights_problems
from captioners.registry import SYSTEMS as CAPTIONERS
from captioners.train import main as train_captioner
from composition.extract import main as extract_compositions
from llm.finetune import main as finetune_llm
from llm.model import base_model_problems
from pipeline.executor import check_only, execute, may_run, stage_problems, summary_table
from pipeline.inputs import input_problems
from pipeline.layout import CHECKPOINT_FILES, Layout
from pipeline.stages import Run
from pipeline.stages.base import PipelineOptions
from pipeline.stages.captioners import default_config
from pipeline.systems import SYSTEMS, end_to_end
from segcap import atomic
from segcap.cli import run as run_cli
from segcap.errors import ConfigError, DataError
from segcap.options import config_kwargs, flat, gathers, options_of, typed_options
from segmentation.model import encoder_weights_problems
from segmentation.scene import scene_classes
from segmentation.train import form_problems
from segmentation.train import main as train_segmenter
from synthetic.generate import main as generate_synthetic

ALIASES = {"from_stage": ["--from"]}  # `from` is a Python keyword
SECTIONS: dict[str, Callable[..., Any]] = {  # the pipeline config's per-stage sections and whose options they hold
    "synthetic": generate_synthetic, "segmentation": train_segmenter, "llm": finetune_llm}
PRETRAINED_OPTION = "checkpoint"  # the captioners.train option naming a pretrained checkpoint (folder or hub id)


# ---------------------------------------------------------------------------------------------------- options
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
    may name a ``config`` (default: its architecture's, :func:`default_config`), set ``zero_shot: true`` (caption with the pretrained
    checkpoint it names, untrained) and any captioners.train option; ``arch`` follows from the system's name."""
    entries, END_TO_END = entries or {}, end_to_end()
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
        config, zero_shot = entry.pop("config", default_config(system)), entry.pop("zero_shot", False)
        if not isinstance(zero_shot, bool):
            problems.append(f"{where}: zero_shot must be true or false, got {zero_shot!r}")
        if entry.pop("arch", END_TO_END[system]) != END_TO_END[system]:
            problems.append(f"{where}: arch follows from the system's name ({END_TO_END[system]}); remove it")
        file = _config_file(problems, train_captioner, f"{where}.config", Path(config)) if config else {}
        if file.get("arch", END_TO_END[system]) != END_TO_END[system]:
            problems.append(f"{where}: config {config} is for arch {file['arch']}; {system} is "
                            f"{END_TO_END[system]}: name a config of that arch")
        options, found = typed_options(train_captioner, entry, where)
        problems += found
        merged = {**file, **options}
        if "encoder_weights" in CAPTIONERS[system].option_names and not zero_shot:  # its encoder's weights load now
            defaults = options_of(train_captioner)
            problems += [f"{where}: {p}" for p in captioner_weights_problems(
                merged.get("encoder", defaults["encoder"].default),
                merged.get("encoder_weights", defaults["encoder_weights"].default))]
        checkpoint = merged.get(PRETRAINED_OPTION)
        if (zero_shot or CAPTIONERS[system].needs_checkpoint) and not checkpoint:
            problems.append(f"{where}: {'zero_shot' if zero_shot else system} needs a pretrained checkpoint; set "
                            f"{PRETRAINED_OPTION} to its folder (or hub id), e.g. config: configs/captioners/blip.yaml")
        out[system] = {"config": Path(config) if config else None, "file": file, "options": options,
                       "zero_shot": bool(zero_shot), "checkpoint": str(checkpoint) if checkpoint else None}
    return out


def make_run(sources: dict[str, str] | None = None, **given: Any) -> Run:
    """Check every option of every stage (all problems in one :class:`ConfigError`) and return the run.

    ``given`` are :class:`PipelineOptions`' fields (those left out take their defaults), checked and typed here with
    everything else. ``sources`` name where the stage sections came from, for messages (:func:`section_sources`)."""
    values, problems = typed_options(PipelineOptions, given, "pipeline.run")  # a value refused keeps its default
    o = PipelineOptions(**values)
    o = dataclasses.replace(o, systems=tuple(o.systems))
    systems = o.systems
    sources = {**section_sources([]), **(sources or {})}
    problems += [f"systems: unknown system {s!r}; use {', '.join(SYSTEMS)}" for s in systems if s not in SYSTEMS]
    sections = {}
    for (name, fn), value in zip(SECTIONS.items(), (o.synthetic, o.segmentation, o.llm), strict=True):
        sections[name], found = typed_options(fn, value or {}, sources[name])
        problems += found
    seg_file = _config_file(problems, train_segmenter, "segmentation_config", o.segmentation_config)
    comp_file = _config_file(problems, extract_compositions, "composition_config", o.composition_config)
    llm_file = _config_file(problems, finetune_llm, "llm_config", o.llm_config)
    try:
        load_class_table(o.classes)
    except ConfigError as e:
        problems.extend(f"classes: {p}" for p in e.problems)
    checkpoint = o.segmentation_checkpoint
    if checkpoint is not None:
        missing = [f for f in CHECKPOINT_FILES[:2] if not (checkpoint / f).is_file()]
        if missing:
            problems.append(f"segmentation_checkpoint: {checkpoint} has no {' or '.join(missing)}; give a folder written "
                            "by python -m segmentation.train, or leave segmentation_checkpoint unset to train one")
    # weights named by the user (imagenet, a hub id) must be loadable now, not after the segmentation training;
    # the training data's form (labelled sources with caption_gsd, or the one drone set) too
    if checkpoint is None:
        seg = {**seg_file, **sections["segmentation"]}
        if seg.get("sources") is not None:
            problems += [f"segmentation: {p}" for p in form_problems(seg["sources"], seg.get("caption_gsd"), None, None)]
        problems += [f"segmentation: {p}" for p in encoder_weights_problems(seg.get("encoder_weights"))]
    llm_all = {**llm_file, **sections["llm"]}
    problems += [f"llm: {p}" for p in base_model_problems(llm_all.get("base_model", "tiny"))]
    if llm_all.get("retrieval_k"):
        problems.append(f"llm: retrieval_k {llm_all['retrieval_k']} in {sources['llm']} (or llm_config): in the "
                        "pipeline, retrieval is per system; set retrieval_k at the top level (pipeline_rag and "
                        "rag_only use it; pipeline, oracle and blind train without retrieval)")
    end_to_end = captioner_entries(problems, systems, o.captioners, sources["captioners"])
    if problems:
        raise ConfigError(problems)
    layout = Layout(
        run_dir=o.run_dir, captions_root=o.captions_root or o.data_root / "rsicd",
        drone_root=o.drone_root or o.data_root / "drone", captions_json=o.captions_json,
        images_dir=o.images_dir, checkpoint_given=checkpoint,
    )
    if o.scene_head and layout.references.is_file():  # the categories the scene head learns, before any stage runs
        try:
            scene_classes(CaptionDataset(layout.references, split="train", images_dir=layout.images_dir),
                          layout.references, "train")
        except (DataError, ConfigError) as e:
            raise ConfigError(f"scene_head: {e}; or set scene_head: false") from e
    checked = dict(layout=layout, segmentation_file=seg_file, composition_file=comp_file, llm_file=llm_file,
                   captioners=end_to_end, **sections)
    return Run(**{**flat(o), **checked})


@gathers
def main(options: PipelineOptions = PipelineOptions(), force: list[str] | None = None, from_stage: str | None = None,
         only: str | None = None) -> list[dict]:
    """Run the whole chain (data, segmentation, masks, compositions, LLMs, captions, scores, report).

    The options are the fields of PipelineOptions (pipeline.stages.base), flat: main(run_dir=...) from Python,
    --run-dir ... on the command line, run_dir: ... in a config.

    Args:
        force: stages to run again afresh (data, segmentation, scenes, masks, compositions, llm, oracle, blind, rag,
            rag_only, scene_only, composition_only, captioners, captions, score, report); the stages reading their outputs run again too.
        from_stage: run this stage and every later one again.
        only: run just this stage (its inputs must exist).
    """
    return _main(flat(options), force, from_stage, only)


def _main(options: dict[str, Any], force: list[str] | None, from_stage: str | None, only: str | None,
          sources: dict[str, str] | None = None) -> list[dict]:
    """:func:`main`: ``options`` go to :func:`make_run`; ``sources`` name where the stage sections came from."""
    problems = stage_problems(force, from_stage, only)
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
        check_only(run.layout, only)
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


def cli(args: Sequence[str] | None = None) -> Any:
    """``python -m pipeline.run``: :func:`main`'s options from flags and ``--config``; a problem in a stage section
    names the file (or flag) it came from."""
    argv = list(sys.argv[1:] if args is None else args)
    sources = section_sources(argv)

    @functools.wraps(main)
    def entry(options: PipelineOptions, force: list[str] | None = None, from_stage: str | None = None,
              only: str | None = None) -> list[dict]:
        return _main(flat(options), force, from_stage, only, sources)

    return run_cli(entry, argv, aliases=ALIASES)


if __name__ == "__main__":
    cli()
