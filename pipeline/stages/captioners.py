"""Stage ``captioners``: captioners.train of each end-to-end captioner asked for, on the caption set's training
split (afresh: they train in minutes on CPU; a ``zero_shot`` entry is not trained: its checkpoint captions as it
is)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from captioners.registry import SYSTEMS as CAPTIONERS
from captioners.train import main as train_captioner
from pipeline.layout import read_json
from pipeline.stages.base import Run, Stage, call, register
from pipeline.systems import end_to_end
from segcap.cli import config_kwargs
from segcap.options import options_of


@dataclass(frozen=True)
class CaptionerOptions:
    file: dict  # the checked options of its config file
    options: dict  # its captioners: entry
    zero_shot: bool


def captioner_options(run: Run) -> dict[str, CaptionerOptions]:
    return {system: CaptionerOptions(e["file"], e["options"], e["zero_shot"]) for system, e in run.captioners.items()}


def run_captioners(run: Run, opts: dict[str, CaptionerOptions], fresh: bool, commands: list[str]) -> dict:
    lay = run.layout
    result = {}
    for system, entry in opts.items():
        if entry.zero_shot:
            result[system] = {"status": "zero-shot", "model": run.captioners[system]["checkpoint"]}
            continue
        out = lay.captioner(system)
        call(commands, "captioners", train_captioner, config=run.captioners[system]["config"], file_options=entry.file,
             user=entry.options, arch=end_to_end()[system], captions=lay.references, images=lay.images_dir,
             out=out, overwrite=True, progress=run.progress)
        m = read_json(out / "metrics.json")  # the stamp keeps the figures; the per-epoch history stays in the folder
        result[system] = {"model": str(out), **{k: m.get(k) for k in ("selected_epoch", "best_val_loss",
                                                                      "train_seconds", "total_seconds")}}
    return result or {"status": "not asked for"}


register(Stage("captioners", ("data",), lambda lay: [lay.run_dir / "captioners"], captioner_options,
                       run_captioners))


def default_config(system: str) -> Path | None:
    """The captioners.train config an end-to-end system starts from (a ``config:`` key in its ``captioners:`` entry
    replaces it); None for an architecture that needs a checkpoint the user names (blip)."""
    return CAPTIONERS[system].default_config()


def cnn_lstm_options(run: Run) -> dict:
    """The cnn_lstm captioner's captioners.train options: its ``captioners:`` entry when the run has one, else the
    default config (:func:`default_config`), over captioners.train's defaults. Read once per run."""
    def build() -> dict:
        entry = run.captioners.get("cnn_lstm")
        merged = ({**entry["file"], **entry["options"]} if entry
                  else config_kwargs(train_captioner, default_config("cnn_lstm")))
        return {**{k: o.default for k, o in options_of(train_captioner).items()}, **merged}

    return dict(run.memo("cnn_lstm_options", build))  # a copy: the caller may change it
