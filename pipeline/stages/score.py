"""Stages ``score`` (evaluation.score of every system, with the human-agreement ceiling) and ``report``
(report.md: results, segmentation and composition figures, examples)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from evaluation.score import main as score_captions
from pipeline.layout import read_json
from pipeline.stages.base import STAGES, Run, Stage, call, register


@dataclass(frozen=True)
class ScoreOptions:
    split: str


def run_score(run: Run, opts: ScoreOptions, fresh: bool, commands: list[str]) -> dict:
    lay = run.layout
    systems = read_json(lay.systems_json)
    scores = call(commands, "score", score_captions, references=lay.references, out=lay.scores,
                  predictions=[Path(p) for p in systems.values()], names=list(systems), split=opts.split, human=True,
                  overwrite=True)
    return {"split": opts.split, "overall": scores.get("overall")}


def run_report(run: Run, opts: None, fresh: bool, commands: list[str]) -> dict:
    # pipeline.report reads the table of stages: imported once the table is full
    from pipeline.report import write_report

    return {"report": str(write_report(run.layout))}


register(Stage("score", ("data", "captions"), lambda lay: [lay.scores], lambda run: ScoreOptions(run.split),
               run_score))
register(Stage("report", lambda: tuple(s for s in STAGES if s != "report"), lambda lay: [lay.report, lay.examples],
               lambda run: None, run_report))
