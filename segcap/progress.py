"""Progress that suits where the output goes: a live bar on a terminal, one line per task in a log file.

On a terminal :class:`Progress` is a tqdm bar. When stderr is a file or a pipe (``make demo > log``, CI, pytest), it
draws nothing per item and prints one line when the task ends (``masks: 1000/1000 images in 12.3 s``), so a log holds
one line per stage or epoch instead of thousands of carriage-return updates::

    for path in Progress(paths, desc="masks", unit="image"):
        ...
    with Progress(total=n, desc="epoch 3", unit="batch") as bar:
        bar.update(1)
        bar.set_postfix(loss=0.4)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from tqdm import tqdm


def is_terminal(stream: IO | None = None) -> bool:
    """Whether ``stream`` (default stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class Progress:
    """A tqdm bar on a terminal; elsewhere one summary line when done. ``enabled=False`` prints nothing at all."""

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
        self._log = enabled and not is_terminal(self.file)
        self._bar = (tqdm(iterable, total=total, desc=desc, unit=unit, file=self.file, dynamic_ncols=True,
                          **tqdm_kwargs) if enabled and not self._log else None)

    def __iter__(self) -> Iterator:
        if self._bar is not None:
            yield from self._bar
            self._closed = True
            return
        for item in self.iterable or ():
            yield item
            self.n += 1
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self._bar is not None:
            self._bar.update(n)

    def set_postfix(self, **values: Any) -> None:
        self.postfix.update(values)
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def write(self, line: str) -> None:
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.write(line, file=self.file)
        else:
            print(line, file=self.file, flush=True)

    def summary(self) -> str:
        count = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        extra = "".join(f", {k} {_fmt(v)}" for k, v in self.postfix.items())
        return f"{self.desc}: {count} {self.unit} in {time.perf_counter() - self._t0:.1f} s{extra}"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._log:
            print(self.summary(), file=self.file, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
