"""One training protocol for segmentation.train, llm.finetune and captioners.train: the output folder, its lock,
--resume and the options record.

- :class:`OutputFolder` says before any work whether a training may write its folder (writable; an earlier run's
  outputs kept unless ``--overwrite``, and a folder of someone else's never deleted; on ``--resume``, a state to
  continue and the options it started with, except those free to change). :meth:`OutputFolder.hold` then takes the
  folder's lock (one writer), checks again under it, prepares the folder (cleared on ``--overwrite``, created only
  now) and, when a fresh run fails before its first checkpoint, removes what it wrote: nothing suggests a checkpoint
  and the next run is not refused.
- The options record: :meth:`OutputFolder.write_record` (``run.json``, with each --resume and what it changed) for
  a training whose checkpoints are another library's (the Trainer's), or the accelerate state's own record
  (:func:`save_state`: ``last/training.json``, options beside the loop's state).
- :func:`save_state` / :func:`state_folder` / :func:`restore_state_folder`: accelerate's ``save_state`` of the last
  epoch in ``last/``, swapped in whole (written beside, renamed), found again after a kill between the two renames.

Every training refuses a --resume that changes an option other than its ``free`` ones (where it runs and what it
shows, not what it learns), with one message naming each change and how to go on.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segcap.atomic import check_writable, folder_lock, write_json
from segcap.errors import ConfigError, OutputExistsError, SegcapError

STATE_DIR = "last"  # accelerate's save_state folder of the last epoch
STATE_FILE = "training.json"  # in STATE_DIR, written last: the loop's state and the options of the run
RECORD_FILE = "run.json"  # the options record of a training whose checkpoints are the Trainer's
NOT_OPTIONS = ("out", "resume", "overwrite")  # never a change that --resume refuses, and not listed as one


def plain(v: Any) -> Any:
    """JSON-ready options: paths as strings, tuples as lists, inside mappings and lists too (what a training records
    and compares on --resume)."""
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in v.items()}
    return v

def resume_changes(before: dict[str, Any], now: dict[str, Any], free: Sequence[str] = ()) -> list[str]:
    """What a resumed run would change: each option recorded by the earlier run (``before``) whose value ``now``
    differs, as ``"key <before>, now <now>"``, sorted; keys in ``free`` may change. An option the earlier run did not
    record (an older version) is not a change. Every training refuses a --resume that changes any (:class:`OutputFolder`)."""
    return [f"{k} {before[k]!r}, now {now.get(k)!r}" for k in sorted(before)
            if k not in free and k in now and before[k] != now[k]]


@dataclass(frozen=True)
class OutputFolder:
    """The output folder of one training run, and the rules its tool keeps for it.

    ``saved`` reads what an earlier run left to resume: its recorded options (a dict), or why there is nothing to
    resume (a string, shown in brackets). ``outputs``: names whose presence means an earlier run wrote the folder
    (refused without --overwrite, cleared with it); None: the whole folder is the tool's, so any file in it is
    refused without --overwrite, and --overwrite deletes it only when it holds one of ``marker``.
    """

    path: Path
    what: str  # in messages about writing it: "checkpoint folder", "LLM output folder", "model folder"
    exists_what: str  # in the message of a folder that holds an earlier run: "training output folder", ...
    tool: str  # "segmentation.train"
    resume: bool
    overwrite: bool
    saved: Callable[[Path], dict | str]
    free: tuple[str, ...] = NOT_OPTIONS  # options that may change between a run and its --resume
    grows: tuple[str, ...] = ()  # numeric options that may grow on --resume (a longer run), never shrink
    trained_in: str = ""  # where the earlier run's state lives, for messages: out / trained_in
    outputs: tuple[str, ...] | None = None
    marker: tuple[str, ...] = ()  # with ``outputs`` None: --overwrite deletes the folder only when it holds one
    clear: tuple[str, ...] = ()  # with ``outputs``: what a fresh run removes before it starts
    accelerate_state: bool = False  # --resume puts the last complete state back as last/ (:func:`restore_state_folder`)

    # ------------------------------------------------------------ before any work
    def problems(self, options: dict[str, Any]) -> list[str]:
        """Why the folder cannot be written with these options (empty: it can): not writable, an --overwrite of a
        folder that is not the tool's, a --resume with nothing to resume or with changed options."""
        try:
            check_writable(self.path, self.overwrite, self.what, folder=True)
        except SegcapError as e:
            return [str(e)]
        return self._rule_problems(options)

    def _rule_problems(self, options: dict[str, Any]) -> list[str]:
        if self.resume:
            return self._resume_problems(options)
        out = self.path
        if (self.outputs is None and self.overwrite and self.marker and out.is_dir() and any(out.iterdir())
                and not any((out / m).exists() for m in self.marker)):
            return [f"--overwrite refuses to delete {out}: it was not written by {self.tool} (no "
                    f"{' or '.join(self.marker)}); choose another --out"]
        return []

    def check(self, options: dict[str, Any]) -> None:
        """Raise what :meth:`problems` finds: the folder's own error when it cannot be written
        (:class:`~segcap.errors.OutputNotWritableError`), else one :class:`ConfigError`; then
        :meth:`refuse_clobber`."""
        check_writable(self.path, self.overwrite, self.what, folder=True)
        problems = self._rule_problems(options)
        if problems:
            raise ConfigError(problems)
        self.refuse_clobber()

    def refuse_clobber(self) -> None:
        """A fresh run without --overwrite into a folder that holds an earlier run: :class:`OutputExistsError`."""
        out = self.path
        if self.resume or self.overwrite or not out.is_dir():
            return
        there = any((out / n).exists() for n in self.outputs) if self.outputs is not None else any(out.iterdir())
        if there:
            raise OutputExistsError(out, self.exists_what)

    def _resume_problems(self, options: dict[str, Any]) -> list[str]:
        out = self.path
        before = self.saved(out)
        if isinstance(before, str):
            return [f"--resume: nothing to resume in {out} {before}; run without --resume to start "
                    "(with --overwrite to replace the folder)"]
        changed = resume_changes(before, options, self.free + self.grows)
        for k in self.grows:
            if k in before and k in options and options[k] < before[k]:
                changed.append(f"{k} {before[k]!r}, now {options[k]!r} (a resumed run may train longer, not shorter)")
        if not changed:
            return []
        free = ", ".join(k for k in self.free if k not in NOT_OPTIONS)
        rule = (f"only {' and '.join(self.grows)} may grow, and {free} may change" if self.grows
                else f"only {free} may change")
        where = out / self.trained_in if self.trained_in else out
        return ([f"--resume: {where} was trained with {c}" for c in changed]
                + [f"--resume continues a run with the options it started with ({rule}); use the same options, or "
                   "start afresh with --overwrite (or another --out)"])

    # ------------------------------------------------------------ the run
    @contextmanager
    def hold(self, options: dict[str, Any], is_main: bool = True, wait: Callable[[], Any] = lambda: None,
             has_checkpoint: Callable[[], bool] | None = None):
        """Lock the folder (one writer; other processes of a distributed run take no lock), check it again under
        the lock, prepare it (main process: on --resume the last complete state put back; on a fresh start the
        earlier run's outputs cleared with --overwrite, the folder created), and yield it.

        When the block fails (or is interrupted) in a fresh run with nothing to keep (``has_checkpoint()`` false:
        no checkpoint saved yet), what it wrote is removed, and the folder itself when this run created it: the
        next run is not refused and nothing suggests a checkpoint. What was in the folder before stays (a fresh
        run's folder held nothing of the tool's: it was absent, empty, of other files, or cleared by --overwrite).
        """
        with folder_lock(self.path, self.what, enabled=is_main):
            existed = self.path.is_dir()
            before = set(self.path.iterdir()) if existed else set()
            self.check(options)
            wait()
            if is_main:
                self._prepare()
                before &= set(self.path.iterdir())  # --overwrite cleared the earlier run's files: not kept
            wait()
            try:
                yield self.path
            except BaseException:
                if is_main and not self.resume and not (has_checkpoint and has_checkpoint()) and self.path.is_dir():
                    for p in set(self.path.iterdir()) - before:
                        shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() \
                            else p.unlink(missing_ok=True)
                    if not existed and not any(self.path.iterdir()):
                        self.path.rmdir()
                raise

    def _prepare(self) -> None:
        out = self.path
        if self.resume:
            if self.accelerate_state:
                restore_state_folder(out)
            return
        if self.outputs is not None:  # what an earlier run left that this one would not replace at once
            for p in (out / n for n in self.clear):
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
        elif self.overwrite and out.is_dir():
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------ the options record
    def write_record(self, options: dict[str, Any], name: str = RECORD_FILE) -> Path:
        """Write the options of the run to ``out/name`` (run.json); a --resume keeps the earlier record's list of
        resumes and adds this one: when, and which options it changed (those free to change, or grown)."""
        path = self.path / name
        record = dict(options)
        if self.resume:
            before = read_record(path)
            changed = {k: [before.get(k), v] for k, v in options.items()
                       if k in before and before[k] != v and k not in ("resume", "overwrite")}
            record["resumed"] = before.get("resumed", []) + [{"at": time.strftime("%Y-%m-%d %H:%M:%S"),
                                                              "changed": changed}]
        return write_json(path, record)


def read_record(path: Path) -> dict:
    """An options record (run.json); an unreadable one is a :class:`ConfigError` saying how to go on."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"--resume: {path} is unreadable ({e}); start afresh with --overwrite") from e
    return value if isinstance(value, dict) else {}


# ---------------------------------------------------------------- accelerate's state of the last epoch
def state_folder(out: Path) -> Path | None:
    """The folder of the last complete training state: ``last/``; or, after a kill between the two renames that
    swap a new state in (:func:`save_state`), ``last.tmp/`` when complete (its training.json is written last), else
    ``last.old/``; None when there is none."""
    for name in (STATE_DIR, f"{STATE_DIR}.tmp", f"{STATE_DIR}.old"):
        if (Path(out) / name / STATE_FILE).is_file():
            return Path(out) / name
    return None


def restore_state_folder(out: Path) -> None:
    """Under the folder's lock: put the last complete state back as ``last/`` and clear the other two."""
    found = state_folder(out)
    if found is not None and found.name != STATE_DIR:
        found.rename(Path(out) / STATE_DIR)
    for name in (f"{STATE_DIR}.tmp", f"{STATE_DIR}.old"):
        shutil.rmtree(Path(out) / name, ignore_errors=True)


def read_state(folder: Path) -> tuple[dict, dict]:
    """(the loop's state, the options of the run) from a state folder's training.json."""
    raw = json.loads((Path(folder) / STATE_FILE).read_text(encoding="utf-8"))
    return raw["state"], raw["options"]


def write_state(folder: Path, state: dict, options: dict) -> None:
    write_json(Path(folder) / STATE_FILE, {"state": state, "options": options})


def saved_state_options(out: Path) -> dict | str:
    """For :attr:`OutputFolder.saved`: the options recorded with the last complete accelerate state, or why there
    is none."""
    found = state_folder(out)
    if found is None:
        return f"(no {STATE_DIR}/{STATE_FILE})"
    return read_state(found)[1]


def save_state(acc, out: Path, state: dict, options: dict, extra: Callable[[Path], Any] | None = None,
               safe_serialization: bool = True) -> None:
    """The whole training state into ``out/last/``: written as ``last.tmp/`` (accelerate's ``save_state`` in every
    process: model, optimiser, scheduler, scaler, RNG states; then ``extra(folder)`` and training.json, the loop's
    ``state`` and the run's ``options``, by the main process, last: its presence marks a complete state), then
    swapped in for the previous one."""
    out = Path(out)
    tmp_dir, old_dir, last_dir = out / f"{STATE_DIR}.tmp", out / f"{STATE_DIR}.old", out / STATE_DIR
    if acc.is_main_process:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp_dir), safe_serialization=safe_serialization)  # tied weights: False (torch's format)
    acc.wait_for_everyone()
    if acc.is_main_process:
        if extra is not None:
            extra(tmp_dir)
        write_state(tmp_dir, state, options)
        shutil.rmtree(old_dir, ignore_errors=True)
        if last_dir.exists():
            last_dir.rename(old_dir)
        tmp_dir.rename(last_dir)
        shutil.rmtree(old_dir, ignore_errors=True)
    acc.wait_for_everyone()
