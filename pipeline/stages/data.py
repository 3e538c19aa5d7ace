"""Stage ``data``: the caption set and the drone set must be there; with ``generate`` on, synthetic.generate writes
the synthetic sets when they are absent or were written with other options (:func:`data_plan`)."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pipeline.layout import Layout, read_json
from pipeline.stages.base import Run, Stage, call, register
from segcap import atomic
from segcap.errors import DatasetNotFoundError
from synthetic.generate import main as generate_synthetic

GENERATED = "generated_by_pipeline.json"  # in data_root: the synthetic.generate options the data was written with


@dataclass(frozen=True)
class DataOptions:
    data_root: Path
    drone_root: Path
    captions_root: Path
    captions_json: str
    images_dir: str
    generate: bool
    synthetic: dict | None  # every synthetic.generate option (with generate on)
    drone_needed: bool  # the segmenter trains here on the drone set (no checkpoint given, no labelled sources)


def synthetic_options(run: Run) -> dict:
    """Every option synthetic.generate writes the data with (its defaults, then the ``synthetic:`` section)."""
    params = inspect.signature(generate_synthetic).parameters
    options = {k: p.default for k, p in params.items() if k not in ("out", "overwrite", "progress")}
    options.update(run.synthetic)
    return json.loads(json.dumps(options, default=str))  # as a JSON file holds them (tuples become lists)


def generated_with(run: Run) -> dict | None:
    """The synthetic.generate options the data under ``data_root`` was written with: the pipeline's record of them,
    {} when synthetic.generate wrote the caption set but the options are unknown, None for data it did not write."""
    marker = read_json(run.data_root / GENERATED)
    if marker:
        return marker.get("options") or {}
    generator = read_json(run.layout.references).get("generator") or {}
    return {} if generator.get("name") == "synthetic.generate" else None


def trains_on_sources(run: Run) -> bool:
    """Whether the segmentation options list labelled ``sources`` (then no drone_root is needed or passed)."""
    return {**run.segmentation_file, **run.segmentation}.get("sources") is not None


def data_plan(run: Run) -> Literal["present", "generate"]:
    """What the data stage will do: keep the data that is there (``present``), or write the synthetic sets
    (``generate``: with ``generate`` on, when they are absent or were written with other options); a
    :class:`DatasetNotFoundError` when it can do neither (the data is missing and generate is off, or data_root holds
    files that synthetic.generate did not write, which are never replaced). Decided once per run: the input checks
    ask before any stage runs, the stage when it runs, and nothing runs before it."""
    return run.memo("data_plan", lambda: _plan(run))[0]


def _plan(run: Run) -> tuple[Literal["present", "generate"], dict | None]:
    """:func:`data_plan`, and the options the synthetic sets there were written with (with ``generate`` on)."""
    lay = run.layout
    have_captions = lay.references.is_file()
    have_drone = lay.drone_images.is_dir() or not run.stage_options("data").drone_needed
    wanted = run.stage_options("data").synthetic
    written_with = generated_with(run) if run.generate else None
    if have_captions and have_drone and (not run.generate or written_with is None or written_with == wanted):
        return "present", written_with
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
    return "generate", written_with


def options(run: Run) -> DataOptions:
    lay = run.layout
    return DataOptions(data_root=run.data_root, drone_root=lay.drone_root, captions_root=lay.captions_root,
                       captions_json=lay.captions_json, images_dir=lay.images_dir, generate=run.generate,
                       synthetic=synthetic_options(run) if run.generate else None,
                       drone_needed=lay.checkpoint_given is None and not trains_on_sources(run))


def run_data(run: Run, opts: DataOptions, fresh: bool, commands: list[str]) -> dict:
    """Generation is deterministic (the same options give the same bytes), so ``fresh`` changes nothing here, and
    data that synthetic.generate did not write is never replaced."""
    lay = run.layout
    plan, written_with = run.memo("data_plan", lambda: _plan(run))
    if plan == "present":
        return {"status": "present", "captions": str(lay.references)}
    summary = call(commands, "data", generate_synthetic, out=opts.data_root, progress=run.progress,
                   overwrite=written_with is not None, user=run.synthetic)
    atomic.write_json(opts.data_root / GENERATED, {"options": opts.synthetic})
    if not (lay.references.is_file() and (lay.drone_images.is_dir() or not opts.drone_needed)):
        raise DatasetNotFoundError(
            f"synthetic.generate wrote {opts.data_root}, but {lay.references} or {lay.drone_images} is still "
            "missing; leave captions_root and drone_root unset (they default to data_root/rsicd and data_root/drone)"
        )
    return {"status": "generated", "captions": str(lay.references), "summary": summary}


def outputs(lay: Layout) -> list[Path]:
    drone = [] if lay.checkpoint_given else [lay.drone_images, lay.drone_root / "label_images_semantic"]
    return [lay.references, lay.images, lay.truth_masks, *drone]


register(Stage("data", (), outputs, options, run_data))
