"""Stage ``compositions``: composition.extract of the predicted masks, and of the exact masks when the caption set
has them."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import yaml

from composition.extract import main as extract_compositions
from pipeline.stages.base import Run, Stage, call, register
from segcap import atomic


@dataclass(frozen=True)
class CompositionOptions:
    config: dict  # the checked options of composition_config


def run_compositions(run: Run, opts: CompositionOptions, fresh: bool, commands: list[str]) -> dict:
    lay = run.layout
    # the checkpoint's class table, as a file the stand-alone command can read too
    atomic.write_text(lay.classes_yaml, yaml.safe_dump(lay.class_table().to_dict(), sort_keys=False))
    extract = functools.partial(call, commands, "compositions", extract_compositions, config=run.composition_config,
                                file_options=opts.config, classes=str(lay.classes_yaml), overwrite=True)
    extract(masks=lay.masks, out=lay.predicted)
    out = {"predicted": str(lay.predicted)}
    if lay.has_truth_masks():
        extract(masks=lay.truth_masks, out=lay.truth, source_ids=True)
        out["truth"] = str(lay.truth)
    else:
        lay.truth.unlink(missing_ok=True)  # from an earlier caption set
    return out


register(Stage("compositions", ("data", "segmentation", "masks"),
                       lambda lay: [lay.predicted, lay.truth, lay.classes_yaml],
                       lambda run: CompositionOptions(run.composition_file), run_compositions))
