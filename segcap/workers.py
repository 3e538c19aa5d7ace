"""Worker processes that end with their parent, however the parent ends.

A DataLoader worker blocked on a full pipe outlives a parent killed with SIGKILL: torch's own watchdog only looks
at the parent between two items, and the worker holds the decoded images it had prepared (0.5-0.9 GB after a
killed ``pipeline.run``, issue 17). :class:`WorkerInit`, given as a DataLoader's ``worker_init_fn``, asks Linux to
send the worker SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and ends the worker at once if the parent
died before it got that far. Elsewhere (macOS, Windows) it only runs the wrapped function::

    DataLoader(ds, num_workers=2, worker_init_fn=WorkerInit())              # dies with its parent
    DataLoader(ds, num_workers=2, worker_init_fn=WorkerInit(reseed))        # ... then reseed(worker_id)
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent_pid: int) -> bool:
    """Have this process killed when its parent dies (Linux); exit now if ``parent_pid`` is already gone.

    Returns whether the kernel took the request (False off Linux, or where prctl is unavailable)."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:  # the parent died before the request: nobody will read what this worker makes
        os._exit(0)
    return armed


class WorkerInit:
    """A picklable ``worker_init_fn``: :func:`die_with_parent`, then ``then(worker_id)`` when given.

    Built in the parent (it records the parent's pid)."""

    def __init__(self, then: Callable[[int], None] | None = None):
        self.parent_pid = os.getpid()
        self.then = then

    def __call__(self, worker_id: int) -> None:
        die_with_parent(self.parent_pid)
        if self.then is not None:
            self.then(worker_id)
