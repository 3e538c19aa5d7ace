"""Progress that suits where the output goes: a live bar on a terminal, one line per task in a log file.

On a terminal :class:`Progress` is a tqdm bar. When stderr is a file or a pipe (``make demo > log 2>&1``, CI, pytest),
it draws nothing per item and prints one line when the task ends (``masks: 1000/1000 image in 12.3 s``), so a log
holds one line per stage or epoch instead of thousands of carriage-return updates::

    for path in Progress(paths, desc="masks", unit="image"):
        ...
    with Progress(total=n, desc="epoch 3", unit="batch") as bar:
        bar.update(1)
        bar.set_postfix(loss=0.4)
        bar.write("skipped: bad.png")  # a message, above the bar on a terminal, a line of its own in a log

A task left by an exception still gets its line in a log, marked ``stopped``. Code that draws its own bar (the
Hugging Face Trainer) asks :func:`is_terminal` whether to draw it; :func:`quiet_library_bars` turns off the bars the
Hugging Face libraries draw by themselves (saving and loading weight shards) where stderr is no terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm


def is_terminal(stream: IO | None = None) -> bool:
    """Whether ``stream`` (default: the current stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def quiet_library_bars(stream: IO | None = None) -> bool:
    """Turn off transformers' and huggingface_hub's own tqdm bars where ``stream`` (default stderr) is no terminal.

    They are process-wide switches, left off: whether stderr is a terminal does not change while a process runs.
    Returns whether the bars were turned off.
    """
    if is_terminal(stream):
        return False
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()
    return True


class Progress:
    """A tqdm bar on a terminal; elsewhere one summary line when done. ``enabled=False`` draws no bar and no line.

    Args:
        iterable: the items to go over (``for x in Progress(items)``); None to count with :meth:`update`.
        total: the number of items; default ``len(iterable)`` where it has one.
        desc: the task's name, first on the bar and on the summary line.
        unit: what an item is (image, mask, batch).
        enabled: False: no bar and no summary (messages from :meth:`write` still print).
        file: the stream to write to (default: the current stderr); it decides between bar and line.
        tqdm_kwargs: passed on to tqdm on a terminal (``leave=False``, ...).
    """

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool = True, file: IO | None = None, **tqdm_kwargs: Any):
        self.file = sys.stderr if file is None else file
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.postfix: dict[str, Any] = {}
        self._t0 = time.perf_counter()
        self._closed = False
        self._log = enabled and not is_terminal(self.file)  # one line at the end
        self._bar = (tqdm(iterable, total=total, desc=desc, unit=unit, file=self.file, dynamic_ncols=True,
                          **tqdm_kwargs) if enabled and not self._log else None)

    def __iter__(self) -> Iterator:
        if self._bar is not None:
            for item in self._bar:
                self.n += 1
                yield item
            self.close()
            return
        for item in self.iterable or ():
            yield item
            self.n += 1
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        """Figures shown after the bar and at the end of the summary line (``loss 0.4123``)."""
        self.postfix.update(values)
        if self._bar is not None:
            self._bar.set_postfix(**{k: _fmt(v) for k, v in values.items()})

    def write(self, line: str) -> None:
        """Print a message without breaking the bar (in a log: the line as it is)."""
        if self._bar is not None and not self._closed:
            self._bar.write(line, file=self.file)
        else:
            print(line, file=self.file, flush=True)

    def summary(self, stopped: bool = False) -> str:
        """The log line: ``desc: done/total unit in seconds``, the postfix figures, ``stopped`` if it did not end."""
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        extra = "".join(f", {k} {_fmt(v)}" for k, v in self.postfix.items())
        head = f"{self.desc}: " if self.desc else ""
        return (f"{head}{count} {_plural(self.unit, self.n)} in {time.perf_counter() - self._t0:.1f} s{extra}"
                + (" (stopped)" if stopped else ""))

    def close(self, stopped: bool = False) -> None:
        """End the task: close the bar, or print the summary line (once)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._log:
            print(self.summary(stopped), file=self.file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type | None, *exc: Any) -> None:
        self.close(stopped=exc_type is not None)


def _plural(unit: str, n: int) -> str:
    """tqdm's units are singular ("image/s"); a count reads better plural: "3 images", "2 batches"."""
    if n == 1 or not unit or unit.endswith("s"):
        return unit
    return unit + ("es" if unit.endswith(("ch", "sh", "x")) else "s")


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
