"""The whole chain on one caption set, stage by stage: what ``make demo`` runs.

    python -m pipeline.run --config configs/pipeline/synthetic.yaml                 # the demo (synthetic data)
    python -m pipeline.run --config configs/pipeline/synthetic.yaml --force llm     # redo one stage
    python -m pipeline.run --config configs/pipeline/synthetic.yaml --from compositions   # redo from a stage on
    python -m pipeline.run --config configs/pipeline/synthetic.yaml --only score    # one stage, outputs upstream
    python -m pipeline.run --config configs/pipeline/rsicd.yaml                     # real data, Llama-2 + QLoRA

Stages, in order (each writes under ``run_dir`` and a stamp ``stages/<name>.json`` when it has finished):

=============  =========================================================================================
data           synthetic.generate, only when the data is absent and ``generate`` is on
segmentation   segmentation.train on the drone set (skipped when ``segmentation_checkpoint`` is given)
masks          segmentation.predict on every caption-set image
compositions   composition.extract of the predicted masks, and of the exact masks when the set has them
llm            llm.finetune on the predicted compositions (the pipeline's captioner)
oracle         llm.finetune on the exact-mask compositions (what perfect segmentation would give)
blind          llm.finetune with the composition text removed (what the image content adds)
captions       llm.generate (greedy, and beam search) and the baselines on the test split
score          evaluation.score of every system, with the human-agreement ceiling
report         report.md: results, segmentation and composition figures, examples
=============  =========================================================================================

Each stamp holds the stage's *fingerprint*: a hash of the options it ran with (the bytes of its config files, the
pipeline settings it reads, the class table) and of the fingerprints of the stages it reads from. A rerun skips a
stage whose stamp matches. A stage that never finished resumes where its own tool can, if it started with the same
fingerprint (``stages/<name>.started.json``); otherwise it starts afresh, replacing its outputs. A stage whose options
changed runs afresh, and so does every stage downstream of it. ``--force`` redoes the named stages afresh (only
them); ``--from`` redoes a stage and every later one afresh.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from segcap import atomic
from segcap.cli import config_kwargs
from segcap.errors import ConfigError, DatasetNotFoundError

REPO = Path(__file__).resolve().parents[1]
STAGES = ("data", "segmentation", "masks", "compositions", "llm", "oracle", "blind", "captions", "score", "report")
SYSTEMS = ("pipeline", "pipeline_beam", "oracle", "template", "nearest", "blind")
ALIASES = {"from_stage": ["--from"]}  # `from` is a Python keyword


# ---------------------------------------------------------------------------------------------------- options
@dataclass
class Run:
    """Everything one run needs, with the paths derived from the options."""

    run_dir: Path
    data_root: Path
    drone_root: Path
    captions_root: Path
    captions_json: str
    images_dir: str
    generate: bool
    synthetic: dict
    classes: str
    segmentation_config: Path
    segmentation_checkpoint: Path | None
    segmentation: dict
    caption_scale: float
    composition_config: Path
    llm_config: Path
    llm: dict
    num_beams: int
    systems: list[str]
    split: str
    progress: bool
    commands: dict[str, list[str]] = field(default_factory=dict)
    fresh: bool = False  # the running stage replaces its outputs (True) or resumes an interrupted attempt (False)

    @property
    def stamps(self) -> Path:
        return self.run_dir / "stages"

    @property
    def checkpoint(self) -> Path:
        return self.segmentation_checkpoint or self.run_dir / "segmentation"

    @property
    def masks(self) -> Path:
        return self.run_dir / "masks"

    @property
    def predicted(self) -> Path:
        return self.run_dir / "compositions" / "predicted.jsonl"

    @property
    def truth(self) -> Path:
        return self.run_dir / "compositions" / "truth.jsonl"

    @property
    def references(self) -> Path:
        return self.captions_root / self.captions_json

    def has_truth_masks(self) -> bool:
        from aerialdata.captionset import CaptionDataset

        return (self.captions_root / CaptionDataset.masks_dir).is_dir()

    def wants(self, system: str) -> bool:
        return system in self.systems


def _as_command(module: str, kwargs: dict[str, Any]) -> str:
    """The command line that repeats a call of ``module``'s ``main`` with these arguments."""
    parts = [f"python -m {module}"]
    for k, v in kwargs.items():
        flag = "--" + k.replace("_", "-")
        if v is None or k == "progress":
            continue
        if isinstance(v, bool):
            parts.append(flag if v else f"--no-{k.replace('_', '-')}")
        elif isinstance(v, (list, tuple)):
            parts.append(f"{flag} {' '.join(str(x) for x in v)}")
        else:
            parts.append(f"{flag} {v}")
    return " ".join(parts)


def _call(run: Run, stage: str, fn: Callable[..., Any], config: Path | None = None, user: dict | None = None,
          **overrides) -> Any:
    """Call an entry point's ``main``: its YAML ``config``, then the pipeline's ``overrides`` (None included: it
    clears a config value), then the ``user``'s section of the pipeline config (which wins); log the command."""
    kwargs = config_kwargs(fn, config) if config else {}
    kwargs.update(overrides)
    kwargs.update(user or {})
    params = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"{fn.__module__}.main does not take {', '.join(unknown)}; check the pipeline config")
    shown = {"config": config, **overrides, **(user or {})} if config else dict(kwargs)
    run.commands.setdefault(stage, []).append(_as_command(fn.__module__, shown))
    return fn(**kwargs)


# ---------------------------------------------------------------------------------------------------- stages
def stage_data(run: Run) -> dict:
    have_captions = run.references.is_file()
    have_drone = (run.drone_root / "original_images").is_dir() or run.segmentation_checkpoint is not None
    if have_captions and have_drone:
        return {"status": "present", "captions": str(run.references)}
    if not run.generate:
        missing = run.references if not have_captions else run.drone_root / "original_images"
        raise DatasetNotFoundError(
            f"{missing} not found; point captions_root/drone_root at your data, or set generate: true to write "
            "the synthetic sets there"
        )
    from synthetic.generate import main as generate

    return _call(run, "data", generate, out=run.data_root, progress=run.progress, overwrite=False, user=run.synthetic)


def stage_segmentation(run: Run) -> dict:
    if run.segmentation_checkpoint is not None:
        if not (run.segmentation_checkpoint / "model.pt").is_file():
            raise DatasetNotFoundError(f"segmentation_checkpoint {run.segmentation_checkpoint} has no model.pt")
        return {"status": "given", "checkpoint": str(run.segmentation_checkpoint)}
    from segmentation.train import main as train

    out = run.run_dir / "segmentation"
    resume = not run.fresh and (out / "last.pt").is_file()
    metrics = _call(
        run, "segmentation", train, config=run.segmentation_config,
        data_root=run.drone_root, out=out, classes=run.classes,
        eval_captions=run.captions_root if run.has_truth_masks() else None,
        resume=resume, overwrite=not resume, progress=run.progress, user=run.segmentation,
    )
    return {"best_val_miou": (metrics or {}).get("best", {}).get("miou") if isinstance(metrics, dict) else None}


def stage_masks(run: Run) -> dict:
    from segmentation.predict import main as predict

    return _call(
        run, "masks", predict, checkpoint=run.checkpoint, images=run.captions_root / run.images_dir,
        out=run.masks, scale=run.caption_scale, overwrite=run.fresh, progress=run.progress,
    )


def stage_compositions(run: Run) -> dict:
    from composition.extract import main as extract

    classes = _checkpoint_classes(run)
    _call(run, "compositions", extract, config=run.composition_config, masks=run.masks, out=run.predicted,
          classes=classes, overwrite=True)
    out = {"predicted": str(run.predicted)}
    if run.has_truth_masks():
        _call(run, "compositions", extract, config=run.composition_config, masks=run.captions_root / "label_images_semantic",
              out=run.truth, classes=classes, source_ids=True, overwrite=True)
        out["truth"] = str(run.truth)
    return out


def _checkpoint_classes(run: Run) -> str:
    """The class table the segmentation checkpoint was trained with, as a YAML file the other tools can read."""
    from segmentation.model import read_checkpoint_config

    cfg = read_checkpoint_config(run.checkpoint)
    table = cfg.get("classes")
    if isinstance(table, dict):
        path = run.run_dir / "classes.yaml"
        if not path.is_file():
            import yaml

            atomic.write_text(path, yaml.safe_dump(table, sort_keys=False))
        return str(path)
    return str(table or run.classes)


def _finetune(run: Run, stage: str, compositions: Path, out: Path, prompt_mode: str) -> dict:
    from llm.finetune import main as finetune

    resume = not run.fresh and any((out / "checkpoints").glob("checkpoint-*"))
    return _call(run, stage, finetune, config=run.llm_config, compositions=compositions, captions=run.references,
                 out=out, prompt_mode=prompt_mode, resume=resume, overwrite=not resume, user=run.llm)


def stage_llm(run: Run) -> dict:
    return _finetune(run, "llm", run.predicted, run.run_dir / "llm" / "pipeline", "full")


def stage_oracle(run: Run) -> dict:
    if not run.wants("oracle"):
        return {"status": "not asked for"}
    if not run.truth.is_file():
        return {"status": "skipped: the caption set has no exact masks (label_images_semantic/)"}
    return _finetune(run, "oracle", run.truth, run.run_dir / "llm" / "oracle", "full")


def stage_blind(run: Run) -> dict:
    if not run.wants("blind"):
        return {"status": "not asked for"}
    return _finetune(run, "blind", run.predicted, run.run_dir / "llm" / "blind", "blind")


def stage_captions(run: Run) -> dict:
    from aerialdata.captionset import CaptionDataset
    from composition.schema import read_jsonl
    from llm.generate import main as generate
    from pipeline.baselines import NearestNeighbour, template_caption

    pred_dir = run.run_dir / "predictions"
    written: dict[str, str] = {}

    def gen(name: str, model: Path, comps: Path, beams: int = 1) -> None:
        out = pred_dir / f"{name}.json"
        _call(run, "captions", generate, model=model, compositions=comps, captions=run.references, split=run.split,
              out=out, num_beams=beams, overwrite=True)
        written[name] = str(out)

    llm_dir = run.run_dir / "llm"
    if run.wants("pipeline"):
        gen("pipeline", llm_dir / "pipeline", run.predicted)
    if run.wants("pipeline_beam") and run.num_beams > 1:
        gen(f"pipeline_beam{run.num_beams}", llm_dir / "pipeline", run.predicted, run.num_beams)
    if run.wants("oracle") and (llm_dir / "oracle").is_dir():
        gen("oracle", llm_dir / "oracle", run.truth)
    if run.wants("blind") and (llm_dir / "blind").is_dir():
        gen("blind", llm_dir / "blind", run.predicted)

    records = {Path(r["image"]).stem: r for r in read_jsonl(run.predicted)}
    test = CaptionDataset(run.references, split=run.split)
    test_recs = [records[Path(it.filename).stem] for it in test]
    if run.wants("template"):
        preds = [{"image_id": it.filename, "caption": template_caption(r)} for it, r in zip(test, test_recs, strict=True)]
        written["template"] = str(atomic.write_json(pred_dir / "template.json", preds))
    if run.wants("nearest"):
        from aerialdata.classes import load_class_table

        train = [it for it in CaptionDataset(run.references, split="train") if Path(it.filename).stem in records]
        table = load_class_table(_checkpoint_classes(run))
        nn = NearestNeighbour([records[Path(it.filename).stem] for it in train], [it.sentences for it in train],
                              table.num_classes)
        preds = [{"image_id": it.filename, "caption": c} for it, c in zip(test, nn.caption(test_recs), strict=True)]
        written["nearest"] = str(atomic.write_json(pred_dir / "nearest.json", preds))
    atomic.write_json(pred_dir / "systems.json", written)
    return written


def stage_score(run: Run) -> dict:
    from evaluation.score import main as score

    systems = json.loads((run.run_dir / "predictions" / "systems.json").read_text())
    return _call(run, "score", score, references=run.references, out=run.run_dir / "scores",
                 predictions=[Path(p) for p in systems.values()], names=list(systems), split=run.split, human=True,
                 overwrite=True)


def stage_report(run: Run) -> dict:
    from pipeline.report import write_report

    return {"report": str(write_report(run))}


STAGE_FUNCS: dict[str, Callable[[Run], dict]] = {
    "data": stage_data, "segmentation": stage_segmentation, "masks": stage_masks,
    "compositions": stage_compositions, "llm": stage_llm, "oracle": stage_oracle, "blind": stage_blind,
    "captions": stage_captions, "score": stage_score, "report": stage_report,
}


# ---------------------------------------------------------------------------------------------------- driver
def _stamp(run: Run, stage: str) -> Path:
    return run.stamps / f"{stage}.json"


def _started(run: Run, stage: str) -> Path:
    return run.stamps / f"{stage}.started.json"


# What each stage reads from the stages before it (its fingerprint includes theirs).
UPSTREAM = {
    "data": (), "segmentation": ("data",), "masks": ("segmentation",), "compositions": ("masks",),
    "llm": ("compositions",), "oracle": ("compositions",), "blind": ("compositions",),
    "captions": ("llm", "oracle", "blind"), "score": ("captions",), "report": ("score",),
}


def _file_digest(path: Path | str | None) -> str | None:
    """sha256 of a file's bytes (a config or class-table YAML); the plain string for a name like seed10."""
    if path is None:
        return None
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else str(path)


def _checkpoint_id(folder: Path | None) -> str:
    """A given checkpoint folder, by path and by its weights' size and modification time (replaced weights count)."""
    if folder is None:
        return ""
    weights = Path(folder) / "model.pt"
    if not weights.is_file():
        return str(folder)
    st = weights.stat()
    return f"{folder}:{st.st_size}:{st.st_mtime_ns}"


def _own_options(run: Run, stage: str) -> dict:
    """The options a stage's outputs depend on (beyond its upstream stages' outputs)."""
    if stage == "data":
        return {"drone_root": str(run.drone_root), "captions_root": str(run.captions_root),
                "captions_json": run.captions_json, "images_dir": run.images_dir}
    if stage == "segmentation":
        return {"config": _file_digest(run.segmentation_config), "options": run.segmentation,
                "classes": _file_digest(run.classes), "checkpoint": _checkpoint_id(run.segmentation_checkpoint)}
    if stage == "masks":
        return {"caption_scale": run.caption_scale}
    if stage == "compositions":
        return {"config": _file_digest(run.composition_config)}
    if stage in ("llm", "oracle", "blind"):
        wanted = {} if stage == "llm" else {"wanted": run.wants(stage)}  # oracle/blind are skipped when not wanted
        return {"config": _file_digest(run.llm_config), "options": run.llm, **wanted}
    if stage == "captions":
        return {"num_beams": run.num_beams, "systems": sorted(run.systems), "split": run.split}
    if stage == "score":
        return {"split": run.split}
    return {}


def fingerprints(run: Run) -> dict[str, str]:
    """Each stage's fingerprint: its own options and its upstream stages' fingerprints, hashed."""
    out: dict[str, str] = {}
    for stage in STAGES:
        blob = json.dumps({"stage": stage, "options": _own_options(run, stage),
                           "upstream": [out[u] for u in UPSTREAM[stage]]}, sort_keys=True, default=str)
        out[stage] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    return out


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _forced(force: list[str] | None, from_stage: str | None) -> set[str]:
    """The stages the user asked to redo afresh: ``force`` and, with ``from_stage``, it and every later one."""
    return set(force or []) | (set(STAGES[STAGES.index(from_stage):]) if from_stage else set())


def plan(run: Run, force: list[str], from_stage: str | None, only: str | None) -> list[str]:
    """Which stages to run: those not finished with their current fingerprint (and everything downstream of a
    stage that runs for that reason), plus the forced ones; ``only`` runs exactly one stage."""
    if only:
        return [only]
    todo = _forced(force, from_stage)
    prints = fingerprints(run)
    return [s for s in STAGES if s in todo or _read(_stamp(run, s)).get("fingerprint") != prints[s]]


def execute(run: Run, stages: list[str], force: list[str] | None = None, from_stage: str | None = None) -> list[dict]:
    """Run ``stages`` in order, stamping each when done; returns one summary row per stage of the chain.

    A stage runs afresh (replacing its outputs) when forced, named by ``from_stage`` or after it, or when it did not
    start with its current fingerprint; otherwise it resumes an interrupted attempt.
    """
    run.stamps.mkdir(parents=True, exist_ok=True)
    prints = fingerprints(run)
    forced = _forced(force, from_stage)
    rows = []
    for stage in STAGES:
        stamp = _stamp(run, stage)
        if stage not in stages:
            done = _read(stamp)
            rows.append({"stage": stage, "status": "done before" if done else "not run", "seconds": done.get("seconds")})
            continue
        before = _read(stamp)
        stamp.unlink(missing_ok=True)
        started = _read(_started(run, stage))
        run.fresh = stage in forced or started.get("fingerprint") != prints[stage]
        if stage in forced:
            why = "forced: afresh"
        elif before:
            why = "its options or inputs changed: afresh"
        elif not run.fresh:
            why = "resuming an interrupted run"
        else:
            why = "options changed since an interrupted run: afresh" if started else "not finished before: afresh"
        atomic.write_json(_started(run, stage), {"stage": stage, "fingerprint": prints[stage],
                                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        print(f"\n=== stage {stage} ({why}) ===", flush=True)
        t0 = time.perf_counter()
        result = STAGE_FUNCS[stage](run)
        seconds = round(time.perf_counter() - t0, 1)
        atomic.write_json(stamp, {"stage": stage, "fingerprint": prints[stage], "seconds": seconds,
                                  "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                  "commands": run.commands.get(stage, []), "result": _jsonable(result)})
        _started(run, stage).unlink(missing_ok=True)
        rows.append({"stage": stage, "status": "ran", "seconds": seconds})
    return rows


def _jsonable(obj: Any) -> Any:
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        return json.loads(json.dumps(obj, default=str))


def summary_table(rows: list[dict], run: Run) -> str:
    lines = [f"{'stage':<14}{'status':<14}{'seconds':>9}"]
    for r in rows:
        sec = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(f"{r['stage']:<14}{r['status']:<14}{sec:>9}")
    scores = run.run_dir / "scores" / "scores.json"
    if scores.is_file():
        from pipeline.report import results_rows

        lines.append("")
        lines.extend(results_rows(run))
    return "\n".join(lines)


def main(
    run_dir: Path = Path("runs/demo"),
    data_root: Path = Path("data/synthetic"),
    drone_root: Path | None = None,
    captions_root: Path | None = None,
    captions_json: str = "dataset_rsicd.json",
    images_dir: str = "RSICD_images",
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
    systems: tuple[str, ...] = SYSTEMS,
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
        captions_json: name of the caption JSON inside captions_root.
        images_dir: folder of the caption images inside captions_root.
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
        systems: what to compare: pipeline, pipeline_beam, oracle, template, nearest, blind.
        split: split of the caption set to caption and score.
        force: stages to run again even if finished (data, segmentation, masks, compositions, llm, oracle, blind,
            captions, score, report).
        from_stage: run this stage and every later one again.
        only: run just this stage (its inputs must exist).
        progress: show progress bars.
    """
    problems = []
    for name, value in (("force", force or []), ("from_stage", [from_stage] if from_stage else []),
                        ("only", [only] if only else [])):
        problems += [f"{name}: unknown stage {s!r}; stages are {', '.join(STAGES)}" for s in value if s not in STAGES]
    problems += [f"systems: unknown system {s!r}; use {', '.join(SYSTEMS)}" for s in systems if s not in SYSTEMS]
    if only and (force or from_stage):
        problems.append("only cannot be combined with force or from_stage")
    if num_beams < 1:
        problems.append(f"num_beams must be >= 1, got {num_beams}")
    for name, path in (("segmentation_config", segmentation_config), ("composition_config", composition_config),
                       ("llm_config", llm_config)):
        if not Path(path).is_file():
            problems.append(f"{name}: {path} not found")
    if problems:
        raise ConfigError(problems)

    run = Run(
        run_dir=Path(run_dir), data_root=Path(data_root),
        drone_root=Path(drone_root) if drone_root else Path(data_root) / "drone",
        captions_root=Path(captions_root) if captions_root else Path(data_root) / "rsicd",
        captions_json=captions_json, images_dir=images_dir, generate=generate, synthetic=dict(synthetic or {}),
        classes=classes, segmentation_config=Path(segmentation_config),
        segmentation_checkpoint=Path(segmentation_checkpoint) if segmentation_checkpoint else None,
        segmentation=dict(segmentation or {}), caption_scale=caption_scale,
        composition_config=Path(composition_config), llm_config=Path(llm_config), llm=dict(llm or {}),
        num_beams=num_beams, systems=list(systems), split=split, progress=progress,
    )
    run.run_dir.mkdir(parents=True, exist_ok=True)
    stages = plan(run, list(force or []), from_stage, only)
    if only:
        _check_inputs(run, only)
    t0 = time.perf_counter()
    rows = execute(run, stages, force, from_stage)
    print("\n" + summary_table(rows, run))
    print(f"\nrun folder: {run.run_dir}  ({time.perf_counter() - t0:.0f} s)  report: {run.run_dir / 'report.md'}")
    return rows


def _check_inputs(run: Run, stage: str) -> None:
    """For --only: every earlier stage must have finished."""
    missing = [s for s in STAGES[: STAGES.index(stage)] if not _stamp(run, s).is_file()]
    if missing:
        raise ConfigError(f"--only {stage}: earlier stage(s) {', '.join(missing)} have not finished in {run.run_dir}; "
                          f"run without --only first")


def clean_stage(run_dir: Path, stage: str) -> None:
    """Forget a stage (its stamp), so the next run redoes it."""
    (Path(run_dir) / "stages" / f"{stage}.json").unlink(missing_ok=True)


if __name__ == "__main__":
    from segcap.cli import run as run_cli

    run_cli(main, aliases=ALIASES)
