"""Run the stages of :mod:`pipeline.stages` in order, each only when it must, stamping each when it is done.

Each stamp holds the stage's *fingerprint*: a hash of its options object (:func:`pipeline.stages.base.hashed`: every
option that changes what the stage computes, hashed whole) and of the *digests* of the upstream outputs it reads (each upstream stamp
records the digest of its own outputs when it finishes: file names, sizes, times and bytes;
:func:`pipeline.layout.files_digest`). A rerun skips a stage whose fingerprint matches and whose outputs are as it left
them. Anything else runs: a stage whose options changed runs afresh, and since its outputs change, so does every stage
that reads them. A stage that never finished resumes where its own tool can if it started with the same fingerprint
(``stages/<name>.started.json``); otherwise it starts afresh, replacing its outputs. ``force`` redoes the named
stages afresh; ``from_stage`` redoes a stage and every later one afresh; ``only`` runs one stage and no other.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from pipeline.layout import Layout, files_digest, read_json
from pipeline.report import health_line, results_rows
from pipeline.stages import STAGES, Run
from pipeline.stages.base import hashed
from segcap import atomic
from segcap.errors import ConfigError


def names() -> tuple[str, ...]:
    return tuple(STAGES)


def run_stage(run: Run, stage: str, fresh: bool = True, commands: list[str] | None = None) -> dict:
    """Run one stage's body with its options for ``run`` (no stamp, no fingerprint): what :func:`execute` does for
    each stage that must run."""
    spec = STAGES[stage]
    return spec.run(run, run.stage_options(spec.name), fresh, [] if commands is None else commands)


def upstream(run: Run, stage: str) -> list[str]:
    """The stages whose outputs ``stage`` reads in this run: an optional stage doing nothing counts for nobody."""
    return [u for u in STAGES[stage].reads() if STAGES[u].active is None or STAGES[u].active(run)]


def digest(layout: Layout, stage: str) -> str:
    """The digest of ``stage``'s outputs as they are on disk now (the model checkpoints of an LLM stage aside)."""
    return files_digest(STAGES[stage].outputs(layout), skip=("checkpoints",))


def _digest_before(run: Run, stage: str) -> str:
    """The digest of ``stage``'s outputs as the run found them, computed once: :func:`may_run` and :func:`execute`
    both compare it with the stamp, and only the stage's own run changes its outputs (its new stamp digests them
    again)."""
    return run.memo(("digest", stage), lambda: digest(run.layout, stage))


def fingerprint(run: Run, stage: str) -> str:
    """A stage's fingerprint: its options object and the digests its upstream stages recorded, hashed."""
    lay = run.layout
    blob = json.dumps({"stage": stage, "options": hashed(run.stage_options(stage)),
                       "upstream": {u: lay.read_stamp(u).get("digest") for u in upstream(run, stage)}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def forced(force: list[str] | None, from_stage: str | None, only: str | None = None) -> set[str]:
    """The stages the user asked to redo afresh: ``force``, ``only``, and with ``from_stage`` it and every later one."""
    todo = set(force or []) | ({only} if only else set())
    order = names()
    return todo | (set(order[order.index(from_stage):]) if from_stage else set())


def stage_problems(force: list[str] | None, from_stage: str | None, only: str | None) -> list[str]:
    """Unknown stage names in ``force``, ``from_stage`` and ``only``, and ``only`` combined with the others."""
    problems = []
    for name, value in (("force", force or []), ("from_stage", [from_stage] if from_stage else []),
                        ("only", [only] if only else [])):
        problems += [f"{name}: unknown stage {s!r}; stages are {', '.join(STAGES)}" for s in value if s not in STAGES]
    if only and (force or from_stage):
        problems.append("only cannot be combined with force or from_stage")
    return problems


def may_run(run: Run, force: list[str] | None = None, from_stage: str | None = None,
            only: str | None = None) -> set[str]:
    """The stages that may run now (:func:`execute` decides each in turn): ``only``'s, or those forced, those not
    finished with their current fingerprint and outputs, and every stage reading one of these."""
    if only:
        return {only}
    lay, todo, out = run.layout, forced(force, from_stage), set()
    for stage in STAGES:
        before = lay.read_stamp(stage)
        if (stage in todo or any(u in out for u in upstream(run, stage))
                or before.get("fingerprint") != fingerprint(run, stage)
                or before.get("digest") != _digest_before(run, stage)):
            out.add(stage)
    return out


def check_only(layout: Layout, stage: str) -> None:
    """For ``only``: every earlier stage must have finished."""
    order = names()
    missing = [s for s in order[: order.index(stage)] if not layout.stamp(s).is_file()]
    if missing:
        raise ConfigError(f"--only {stage}: earlier stage(s) {', '.join(missing)} have not finished in "
                          f"{layout.run_dir}; run without --only first")


def _why(stage: str, todo: set[str], before: dict, fingerprint_now: str, started: dict, fresh: bool) -> str:
    if stage in todo:
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
    """Run the stages in order, stamping each when done; returns one summary row per stage.

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
    todo = forced(force, from_stage, only)
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
        if stage not in todo and before.get("fingerprint") == now and before.get("digest") == _digest_before(run, stage):
            rows.append({"stage": stage, "status": "done before", "seconds": before.get("seconds")})
            continue
        lay.stamp(stage).unlink(missing_ok=True)
        started = read_json(lay.started(stage))
        fresh = stage in todo or started.get("fingerprint") != now
        atomic.write_json(lay.started(stage), {"stage": stage, "fingerprint": now,
                                               "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        print(f"\n=== stage {stage} ({_why(stage, todo, before, now, started, fresh)}) ===", flush=True)
        commands: list[str] = []
        t0 = time.perf_counter()
        try:
            result = run_stage(run, stage, fresh, commands)
        except BaseException as e:
            rows.append({"stage": stage, "status": "interrupted" if isinstance(e, KeyboardInterrupt) else "failed",
                         "seconds": round(time.perf_counter() - t0, 1)})
            raise
        seconds = round(time.perf_counter() - t0, 1)
        atomic.write_json(lay.stamp(stage), {"stage": stage, "fingerprint": now, "digest": digest(lay, stage),
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
