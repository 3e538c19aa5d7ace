"""Stage ``captions``: the captions of every system asked for (:mod:`pipeline.systems`), on the split to score.

The systems are made in table order by kind: those decoded by llm.generate, the end-to-end captioners (greedy, and
with ``num_beams``), then the lookups, functions of a :class:`CaptionContext` (below). The file of each is
predictions/<name>.json (COCO results), and predictions/systems.json maps the names to them."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from aerialdata.captionset import CaptionDataset
from captioners.generate import main as generate_end_to_end
from captioners.nearest import image_nearest as image_nearest_captions
from composition.schema import read_jsonl
from llm.generate import main as generate_captions
from pipeline.baselines import (
    NearestNeighbour,
    categories_summary,
    neighbour_caption,
    template_caption,
)
from pipeline.baselines import (
    class_oracle as class_oracle_captions,
)
from pipeline.stages.base import Run, Stage, added, call, register
from pipeline.stages.captioners import cnn_lstm_options
from pipeline.stages.llm import LLM_STAGES
from pipeline.systems import SYSTEMS, Decode, EndToEnd, producing_stages
from segcap import atomic

IMAGE_NEAREST_OPTIONS = ("encoder", "encoder_weights", "encoder_stride", "image_size", "seed")


@dataclass(frozen=True)
class CaptionOptions:
    num_beams: int
    systems: list[str]  # sorted
    split: str
    consensus: list  # [candidates per image, where they come from]
    retrieval_k: int
    zero_shot: dict  # end-to-end system -> the checkpoint it captions with untrained
    image_nearest: dict | None = added(None)  # the encoder options image_nearest searches with, when asked for


def image_nearest_options(run: Run) -> dict:
    """The encoder options image_nearest searches with: the cnn_lstm captioner's (:func:`cnn_lstm_options`)."""
    options = cnn_lstm_options(run)
    return {k: options[k] for k in IMAGE_NEAREST_OPTIONS}


def run_device(run: Run) -> str:
    """The device the cnn_lstm captioner is set to (auto: CUDA when there is one); not part of any fingerprint."""
    return str(cnn_lstm_options(run)["device"])


def caption_options(run: Run) -> CaptionOptions:
    return CaptionOptions(
        num_beams=run.num_beams, systems=sorted(run.systems), split=run.split,
        consensus=[run.consensus, run.consensus_candidates], retrieval_k=run.retrieval_k,
        zero_shot={s: e["checkpoint"] for s, e in run.captioners.items() if e["zero_shot"]},
        image_nearest=image_nearest_options(run) if run.wants("image_nearest") else None)


@dataclass
class CaptionContext:
    """What a lookup system reads: the run, the stage's options, the split's items (``test``) and their predicted
    compositions (``test_records``), every record by image stem; the training items (``train``), and an index of the
    training compositions (``neighbours``) are built once, when a system first asks. A system may say how it was
    made in ``references`` (the stamp keeps it; the report reads it)."""

    run: Run
    options: CaptionOptions
    test: CaptionDataset
    records: dict[str, dict]
    test_records: list[dict]
    references: dict = field(default_factory=dict)

    @functools.cached_property
    def train(self) -> list:
        """Every training item, whatever its record."""
        lay = self.run.layout
        return list(CaptionDataset(lay.references, split="train", images_dir=lay.images_dir))

    @functools.cached_property
    def neighbours(self) -> NearestNeighbour:
        """The training images' compositions (those with a record), for the lookups by composition."""
        train = [it for it in self.train if Path(it.filename).stem in self.records]
        return NearestNeighbour([self.records[Path(it.filename).stem] for it in train], [it.sentences for it in train],
                                self.run.layout.class_table().num_classes, [it.filename for it in train])


# ---------------------------------------------------------------------------------------------------- lookups
def template(context: CaptionContext) -> list[str]:
    return [template_caption(r) for r in context.test_records]


def nearest(context: CaptionContext) -> list[str]:
    return context.neighbours.caption(context.test_records, 1)


def nearest_consensus(context: CaptionContext) -> list[str]:
    return context.neighbours.caption(context.test_records, context.options.retrieval_k)


def class_oracle(context: CaptionContext) -> list[str]:
    """The true class's most frequent training caption."""
    context.references["class_oracle"] = categories_summary(context.train, list(context.test))
    return class_oracle_captions(context.train, context.test)


def image_nearest(context: CaptionContext) -> list[str]:
    """The nearest training image in the cnn_lstm's encoder space, chosen as nearest chooses."""
    options = context.options.image_nearest
    context.references["image_nearest"] = options
    return image_nearest_captions(context.test, context.train, list(context.test), choose=neighbour_caption,
                                  **options, device=run_device(context.run))


# ---------------------------------------------------------------------------------------------------- the stage
def run_captions(run: Run, opts: CaptionOptions, fresh: bool, commands: list[str]) -> dict:
    lay = run.layout
    written: dict[str, str] = {}
    asked = [s for name, s in SYSTEMS.items() if name in opts.systems]
    for system in (s for s in asked if isinstance(s.make, Decode)):
        d = system.make
        model, comps = lay.llm(LLM_STAGES[d.llm].folder), lay.truth if d.truth else lay.predicted
        if d.beams and opts.num_beams == 1 or d.truth and not (comps.is_file() and model.is_dir()):
            continue  # beam search with one beam; the oracle without exact masks (its stage skipped); any other
            # missing model is llm.generate's error, not a system quietly left out
        name = f"{system.name}{opts.num_beams}" if d.beams else system.name
        mbr = {"consensus": opts.consensus[0], "candidates": opts.consensus[1]} if d.consensus else {}
        mbr |= {"consensus_pool": opts.retrieval_k} if d.pool else {}
        out = lay.predictions / f"{name}.json"
        call(commands, "captions", generate_captions, model=model, compositions=comps, captions=lay.references,
             split=opts.split, out=out, num_beams=opts.num_beams if d.beams else 1, **mbr, progress=run.progress,
             overwrite=True)
        written[name] = str(out)
    for system in (s for s in asked if isinstance(s.make, EndToEnd)):  # greedy, and beam search as the pipeline's
        entry = run.captioners[system.name]
        model = entry["checkpoint"] if entry["zero_shot"] else lay.captioner(system.name)
        for beams in sorted({1, opts.num_beams}):
            name = system.name if beams == 1 else f"{system.name}_beam{beams}"
            out = lay.predictions / f"{name}.json"
            call(commands, "captions", generate_end_to_end, model=model, captions=lay.references,
                 images=lay.images_dir, arch=system.make.arch, split=opts.split, out=out, num_beams=beams,
                 progress=run.progress, overwrite=True)
            written[name] = str(out)
    records = {Path(r["image"]).stem: r for r in read_jsonl(lay.predicted)}
    test = CaptionDataset(lay.references, split=opts.split, images_dir=lay.images_dir)
    context = CaptionContext(run, opts, test, records, [records[Path(it.filename).stem] for it in test])
    for system in (s for s in asked if callable(s.make)):
        preds = [{"image_id": it.filename, "caption": c} for it, c in zip(test, system.make(context), strict=True)]
        written[system.name] = str(atomic.write_json(lay.predictions / f"{system.name}.json", preds))
    atomic.write_json(lay.systems_json, written)
    return {"split": opts.split, "predictions": written,
            **({"references": context.references} if context.references else {})}


def _upstream() -> tuple[str, ...]:
    return ("data", "segmentation", "compositions", *producing_stages())


register(Stage("captions", _upstream, lambda lay: [lay.predictions], caption_options, run_captions))
