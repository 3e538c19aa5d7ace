"""The systems a pipeline run compares: one table, from which everything else about them is derived.

Each :class:`System` says how its captions are made (``make``), which stage produces what it needs (``stage``: its
LLM stage, ``captioners``, or ``captions`` itself), the line the report gives it (``note``), and the groups it
belongs to. From :data:`SYSTEMS` follow: the names ``pipeline.run`` accepts and its default list, which systems
each fine-tune stage serves (a stage serving none of the systems asked for is skipped), the captions stage's work
(:mod:`pipeline.stages.captions`), the stages the captions stage reads, the systems drawing on ``retrieval_k``
training neighbours (checked against the training split before any stage runs), the report's notes, and the
Makefile's ``demo-retrieval`` list::

    python -m pipeline.systems --default --group retrieval      # the names, one line

A system is made in one of three ways:

- :class:`Decode`: llm.generate with a fine-tuned LM (greedy, beam search, consensus decoding);
- :class:`EndToEnd`: captioners.generate with an end-to-end captioner (greedy, and with ``num_beams``), an
  architecture of :data:`captioners.registry.ARCHS`;
- a function ``(CaptionContext) -> list[str]``: one caption per test image, from what the context offers (the test
  and training items, the compositions, a nearest-neighbour index, the run's options; ``context.references`` takes
  what the report should say about how it was made).

Adding a system is one entry here (and, when it needs a model, the stage that trains it: see
:mod:`pipeline.stages`); a test adds one from the test file alone (:func:`register`).
"""

from __future__ import annotations

import argparse
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from captioners.registry import ARCHS

DEFAULT_END_TO_END = ("cnn_lstm",)  # the end-to-end captioners a run compares by default
Group = Literal["chain", "reference", "retrieval", "ablation", "end_to_end"]


@dataclass(frozen=True)
class Decode:
    """Captions from llm.generate with the model of the fine-tune stage ``llm``, on the predicted compositions (or
    the exact-mask ones: ``truth``); with the run's ``num_beams`` (``beams``: skipped when it is 1), consensus
    decoding (``consensus``: the run's ``consensus`` candidates), and the ``retrieval_k`` neighbours' captions in the
    consensus pool (``pool``)."""

    llm: str
    truth: bool = False
    beams: bool = False
    consensus: bool = False
    pool: bool = False


@dataclass(frozen=True)
class EndToEnd:
    """Captions from captioners.generate with the end-to-end captioner of architecture ``arch`` trained (or given
    zero-shot) by the captioners stage: greedy, and with the run's ``num_beams`` (``<system>_beam<N>``)."""

    arch: str


@dataclass(frozen=True)
class System:
    name: str
    make: Decode | EndToEnd | Callable[[Any], list[str]]
    note: str
    group: Group
    default: bool = False  # in pipeline.run's default systems
    retrieval: bool = False  # draws on the retrieval_k closest training images
    reads: str | None = None  # a lookup's: the stage whose outputs it reads besides the compositions

    @property
    def stage(self) -> str:
        """The stage that produces what the system's captions are made with (a stage the captions stage reads)."""
        if isinstance(self.make, Decode):
            return self.make.llm
        return "captioners" if isinstance(self.make, EndToEnd) else self.reads or "captions"


def _lookup(name: str) -> Callable[[Any], list[str]]:
    """The caption lookup ``name`` of :mod:`pipeline.stages.captions` (imported when the captions stage runs)."""
    def make(context: Any) -> list[str]:
        from pipeline.stages import captions

        return getattr(captions, name)(context)

    make.__name__ = name
    return make


SYSTEMS: dict[str, System] = {s.name: s for s in (
    System("pipeline", Decode("llm"), "predicted masks -> composition -> LLM (greedy)", "chain", default=True),
    System("pipeline_beam", Decode("llm", beams=True), "as pipeline, beam search", "chain", default=True),
    System("oracle", Decode("oracle", truth=True),
           "exact masks -> composition -> LLM (greedy): what segmentation errors cost", "reference", default=True),
    System("blind", Decode("blind"), "same LLM trained with the composition text removed: what image content adds",
           "reference", default=True),
    System("pipeline_mbr", Decode("llm", consensus=True),
           "the chain, consensus decoding: of N beam candidates, the one with the highest CIDEr-D against the others, "
           "each weighted by the LLM's probability of it", "retrieval"),
    System("pipeline_pool", Decode("llm", consensus=True, pool=True),
           "the chain's N beam candidates and every caption of the k closest training compositions, each weighted by "
           "the LLM's probability of it given the composition: the caption with the highest weighted CIDEr-D against "
           "the rest", "retrieval", retrieval=True),
    System("pipeline_rag", Decode("rag"),
           "the chain with retrieval-augmented prompts: composition + captions of the closest training compositions "
           "(greedy)", "retrieval", retrieval=True),
    System("pipeline_rag_mbr", Decode("rag", consensus=True), "retrieval-augmented prompts and consensus decoding",
           "retrieval", retrieval=True),
    System("rag_only", Decode("rag_only"),
           "retrieval-only ablation: the neighbours' captions without the composition text (greedy)", "retrieval",
           retrieval=True),
    System("pipeline_scene", Decode("scene_only"),
           "ablation: the chain's LLM trained on the record's scene line alone (greedy)", "ablation"),
    System("pipeline_composition", Decode("composition_only"),
           "ablation: the chain's LLM trained on the composition without its scene line (greedy)", "ablation"),
    System("template", _lookup("template"), "rules over the predicted composition, no learning", "reference",
           default=True),
    System("nearest", _lookup("nearest"), "caption of the training image with the closest composition vector",
           "reference", default=True),
    System("nearest_consensus", _lookup("nearest_consensus"),
           "of the captions of the k closest training compositions, the one with the highest CIDEr-D against the "
           "others (Devlin et al. 2015)", "reference", default=True, retrieval=True),
    System("class_oracle", _lookup("class_oracle"),
           "the most frequent training caption of the image's true category, no model: the ceiling of a scene "
           "classifier", "reference"),
    System("image_nearest", _lookup("image_nearest"),
           "caption of the training image nearest in the CNN+LSTM encoder's feature space (global average pool, "
           "cosine), chosen as nearest chooses", "reference"),
    # the end-to-end captioners: one per architecture of captioners.registry.ARCHS
    *(System(a.system, EndToEnd(a.name), a.note, "end_to_end", default=a.system in DEFAULT_END_TO_END)
      for a in ARCHS.values()),
)}
HUMAN_NOTE = "each reference scored against the other references of its image (ceiling)"


def register(system: System) -> System:
    """Add ``system`` to :data:`SYSTEMS` (a test's toy system; a new system is better written into the table)."""
    if system.name in SYSTEMS:
        raise ValueError(f"system {system.name!r} exists")
    SYSTEMS[system.name] = system
    return system


def names(group: Group | None = None, default: bool | None = None) -> tuple[str, ...]:
    """The systems' names, in table order: all, those of ``group``, the default ones."""
    return tuple(n for n, s in SYSTEMS.items()
                 if (group is None or s.group == group) and (default is None or s.default == default))


def default_systems() -> tuple[str, ...]:
    return names(default=True)


def end_to_end() -> dict[str, str]:
    """The end-to-end systems: name -> captioners.train architecture."""
    return {n: s.make.arch for n, s in SYSTEMS.items() if isinstance(s.make, EndToEnd)}


def serving(stage: str) -> tuple[str, ...]:
    """The systems made with the model of the fine-tune stage ``stage``."""
    return tuple(n for n, s in SYSTEMS.items() if isinstance(s.make, Decode) and s.make.llm == stage)


def retrieval_users() -> tuple[str, ...]:
    return tuple(n for n, s in SYSTEMS.items() if s.retrieval)


def notes() -> dict[str, str]:
    """The report's line for each system (and for the human ceiling)."""
    return {**{n: s.note for n, s in SYSTEMS.items()}, "human": HUMAN_NOTE}


def producing_stages() -> tuple[str, ...]:
    """Every stage a system's captions are made with (the captions stage reads their outputs)."""
    return tuple(dict.fromkeys(s.stage for s in SYSTEMS.values() if s.stage != "captions"))


def listed(argv: Sequence[str] | None = None) -> str:
    """The Makefile's lists of systems, one line: ``python -m pipeline.systems --default --group retrieval``."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.systems", description="Print system names, one line.")
    parser.add_argument("--default", action="store_true", help="the default systems")
    parser.add_argument("--group", action="append", default=[], choices=typing.get_args(Group),
                        help="the systems of this group (repeatable)")
    a = parser.parse_args(argv)
    chosen = [*(default_systems() if a.default else ()), *(n for g in a.group for n in names(g))]
    return " ".join(dict.fromkeys(chosen or SYSTEMS))


if __name__ == "__main__":
    print(listed())
