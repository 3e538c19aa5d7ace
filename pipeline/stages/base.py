"""What a stage is, the table of stages, and the options every stage reads (:class:`Run`).

A :class:`Stage` declares its name, the stages whose outputs it reads (``upstream``), its outputs (what later stages
read, and what its digest covers), an ``options`` function giving the options dataclass the stage reads for this
run, and ``run``, its body. The body reads its options object and the run's layout (paths) and runtime
(``progress``), nothing else: the executor (:mod:`pipeline.executor`) fingerprints a stage by hashing its options
object and its upstream stages' digests, so the fingerprint holds every option the stage reads by construction.

Hashing an options object (:func:`hashed`) takes every field, with two declared exceptions: a field made with
:func:`runtime` (where to show progress, a config file's path shown in the logged command: never what is computed)
is left out, and a field made with :func:`added` (an option added after runs existed) is left out while it holds
its default, so that adding an option does not redo the stages of every run made before it. A stage may return
None for "does nothing in this run" (hashed as no options).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.layout import Layout
from segcap.cli import check_options

ADDED, RUNTIME = "added", "runtime"


def runtime(default: Any = dataclasses.MISSING, **kw: Any) -> Any:
    """A field of an options object that changes how a stage runs or shows itself, never what it computes: not
    hashed."""
    return dataclasses.field(default=default, metadata={RUNTIME: True}, **kw)


def added(default: Any, **kw: Any) -> Any:
    """A field added after runs existed: hashed only once set away from ``default``."""
    return dataclasses.field(default=default, metadata={ADDED: True}, **kw)


def hashed(options: Any) -> Any:
    """What a stage's fingerprint holds of its options: a dataclass's fields (less :func:`runtime` ones, and
    :func:`added` ones at their default), a mapping's values, recursively; None (the stage does nothing) is {}."""
    return {} if options is None else _plain(options)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (f.metadata.get(RUNTIME) or (f.metadata.get(ADDED) and getattr(value, f.name) == f.default))}
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class Run:
    """Everything the stages read: the run's layout and its options, checked and typed before any stage runs.

    ``*_file`` are the checked options of the entry points' YAML configs; ``synthetic``, ``segmentation`` and
    ``llm`` the pipeline config's sections, which override them. ``captioners`` holds, for each end-to-end system
    asked for, its config file (``config``), that file's checked options (``file``) and the entry's (``options``).
    """

    layout: Layout
    data_root: Path
    generate: bool
    synthetic: dict
    classes: str
    segmentation_config: Path
    segmentation_file: dict
    segmentation: dict
    caption_scale: float
    composition_config: Path
    composition_file: dict
    llm_config: Path
    llm_file: dict
    llm: dict
    num_beams: int
    retrieval_k: int
    retrieval_captions: int
    consensus: int
    consensus_candidates: str
    systems: tuple[str, ...]
    split: str
    progress: bool
    captioners: dict[str, dict] = dataclasses.field(default_factory=dict)
    scene_head: bool = False
    scene_encoder: str = "segmenter"
    scene_views: int = 1

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
