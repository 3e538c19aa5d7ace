"""Safe outputs: checked before the work, written whole or not at all, one writer per folder, no debris after a kill.

- :func:`check_writable` says before any work whether an output can be written: its parent chain must be folders,
  writable (a real probe file, so a read-only disk, a path under ``/proc`` or a folder of another user are all
  caught), the disk not full, and an existing file is kept unless ``overwrite``.
- :func:`atomic_path` writes beside the target and renames, so a reader never sees half a file. Its temporary name
  holds the writer's pid; the next write of the same target removes the temporaries of writers that are no longer
  running (a run killed mid-write leaves nothing a rerun does not clear).
- :func:`folder_lock`: one writer per run or checkpoint folder; a second process is refused with a message naming
  the first. The lock is an ``flock`` on ``.<folder>.lock`` beside the folder (the kernel releases it when its
  process dies, however it dies, so a stale lock is taken over at once; the file records the pid for messages).
- :func:`write_failure_message`: what :func:`segcap.cli.run` prints when the disk fills up or turns read-only during
  the work (exit 2): the error, what this run completed, and how to go on.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from segcap.errors import FolderLockedError, OutputExistsError, OutputNotWritableError

try:  # POSIX; elsewhere the lock falls back to an exclusive create with a pid check
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

MIN_FREE_BYTES = 16 * 2**20  # an output folder on a disk with less free space than this is refused before the work
# errors of the file system during the work that are the user's to fix (exit 2 through segcap.cli.run)
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}

_completed = {"count": 0, "last": None}  # outputs this process finished (atomic writes), for the failure message
_counter = iter(range(1 << 62))
_counter_lock = threading.Lock()


# ---------------------------------------------------------------- checks before the work
def check_writable(path: str | os.PathLike, overwrite: bool, what: str = "output", folder: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written; return it as a Path.

    A file output (``folder`` false) that exists is refused (:class:`OutputExistsError`) unless ``overwrite``; a
    folder where a file is expected, or the reverse, is refused. Then the nearest existing folder on the way to
    ``path`` must be a folder (not a file used as one), writable by this process (a probe file is created and
    removed there: permissions, read-only mounts and pseudo file systems such as /proc all fail it) and hold at
    least :data:`MIN_FREE_BYTES` free (:class:`OutputNotWritableError`). Nothing is left behind.
    """
    path = Path(path)
    if folder:
        if path.exists() and not path.is_dir():
            raise OutputNotWritableError(f"{what} {path} is a file, not a folder; give a folder path, or move the file")
    else:
        if path.is_dir():
            raise OutputNotWritableError(f"{what} {path} is a folder; give a file path (e.g. {path / 'out'}...)")
        if path.exists() and not overwrite:
            raise OutputExistsError(path, what)
    # the nearest existing ancestor receives the first write (a folder output that exists receives its files)
    target = path if folder and path.is_dir() else path.parent
    probe_dir = target
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        if probe_dir.is_symlink():  # a dangling link: its target cannot be created through it
            raise OutputNotWritableError(f"cannot write {what} {path}: {probe_dir} is a broken symbolic link")
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise OutputNotWritableError(f"cannot write {what} {path}: {probe_dir} is a file, not a folder; "
                                     "choose another path, or move that file")
    try:
        fd, probe = tempfile.mkstemp(prefix=".segcap-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputNotWritableError(f"cannot write {what} {path}: {probe_dir} {_why(e)}; choose another path") from e
    free = shutil.disk_usage(probe_dir).free
    if free < MIN_FREE_BYTES:
        raise OutputNotWritableError(f"cannot write {what} {path}: the disk of {probe_dir} is full "
                                     f"({free / 2**20:.1f} MiB free); free some space or choose another path")
    return path


def _why(e: OSError) -> str:
    """What an OSError says about a folder, in words."""
    if e.errno == errno.EROFS:
        return "is on a read-only file system"
    if e.errno in (errno.EACCES, errno.EPERM):
        return "is not writable by this user"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "is on a full disk (or over quota)"
    if e.errno == errno.ENOENT:
        return "does not accept new files (a pseudo file system such as /proc or /sys?)"
    return f"cannot hold new files ({e.strerror or e})"


# ---------------------------------------------------------------- atomic writes
def _tmp_name(path: Path) -> Path:
    with _counter_lock:
        n = next(_counter)
    return path.with_name(f".{path.name}.{os.getpid()}-{n}.tmp")


def _alive(pid: int) -> bool:
    """Whether a process with this pid runs (on this machine)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):  # it exists, owned by someone else (or we cannot tell: keep its files)
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries that :func:`atomic_path` left beside ``path`` in processes that are no longer running
    (killed mid-write); returns what was removed. Temporaries of running writers are left alone."""
    path = Path(path)
    removed = []
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)-\d+\.tmp$")
    try:
        entries = list(path.parent.iterdir()) if path.parent.is_dir() else []
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or _alive(int(m.group(1))):
            continue
        try:
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    old = path.with_name(f".{path.name}.old")  # a folder swap interrupted between its two renames
    if old.is_dir() and path.exists():
        shutil.rmtree(old, ignore_errors=True)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success rename it onto ``path`` (file or folder).

    The temporary is ``.<name>.<pid>-<n>.tmp``: on an exception it is removed, and after a kill the next write of
    ``path`` removes it (:func:`remove_stale_temporaries`). A failure to write for want of space is raised as
    ``OSError(ENOSPC)`` naming ``path`` even where the writer reports it otherwise (torch.save raises RuntimeError).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _tmp_name(path)
    try:
        try:
            yield tmp
        except OSError:
            raise
        except Exception as e:  # noqa: BLE001 - only re-raised, as ENOSPC when the disk is full
            if _disk_full(path.parent):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from e
            raise
        if path.is_dir() and not path.is_symlink() and tmp.is_dir():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _completed["count"] += 1
        _completed["last"] = str(path)
    finally:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists() or tmp.is_symlink():
            tmp.unlink()


def _disk_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < 2**20
    except OSError:
        return False


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically."""
    return write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows) -> Path:
    """Write an iterable of JSON objects, one a line, atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")
    return Path(path)


# ---------------------------------------------------------------- failures during the work
def completed_outputs() -> tuple[int, str | None]:
    """(how many outputs this process has written whole through :func:`atomic_path`, the last one)."""
    return _completed["count"], _completed["last"]


def write_failure_message(e: OSError) -> str:
    """One message for a file-system error during the work (full disk, read-only, permission): what failed, what
    was completed and is kept, and how to go on."""
    where = f": {e.filename}" if e.filename else ""
    what = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the file system is read-only", errno.EFBIG: "the file is too large for the file system",
            }.get(e.errno, e.strerror or str(e))
    fix = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
           errno.EROFS: "make the disk writable or write elsewhere (--out)",
           errno.EFBIG: "write to another file system (--out)"}.get(
        e.errno, "fix the permissions of that path, or write elsewhere (--out)")
    n, last = completed_outputs()
    done = (f"{n} output{'s' if n != 1 else ''} completed before it are whole and kept (the last: {last})"
            if n else "no output was completed; nothing half-written is left")
    return (f"{what}{where}. {done[0].upper() + done[1:]}; {fix}, then rerun the same command: it resumes where "
            "the tool can (masks, checkpoints, pipeline stages) and redoes the rest")


# ---------------------------------------------------------------- one writer per folder
def lock_path(folder: str | os.PathLike) -> Path:
    """The lock file of ``folder``: ``.<name>.lock`` beside it (inside, it would count as one of its files)."""
    folder = Path(os.path.abspath(folder))
    return folder.parent / f".{folder.name}.lock"


def _holder(lock: Path) -> dict:
    try:
        value = json.loads(lock.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _describe_holder(holder: dict) -> str:
    pid = holder.get("pid", "?")
    bits = [f"process {pid}"]
    if holder.get("host") and holder["host"] != socket.gethostname():
        bits.append(f"on {holder['host']}")
    if holder.get("command"):
        bits.append(f"({holder['command']}")
        bits[-1] += f", since {holder['started']})" if holder.get("started") else ")"
    return " ".join(bits)


@contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "output folder", enabled: bool = True):
    """Hold the one-writer lock of ``folder`` for the duration of the block.

    A second process asking for the same folder gets :class:`FolderLockedError`, naming the process that holds it.
    The lock dies with its process (``flock``), so after a kill the next run takes it over, saying so. ``enabled``
    false (the other processes of a distributed run) does nothing. Yields the lock file's path.
    """
    if not enabled:
        yield None
        return
    lock = lock_path(folder)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(lock, folder, what)
    try:
        before = _holder(lock)
        if before.get("pid") and before.get("pid") != os.getpid():
            print(f"note: taking over the lock of {folder} from {_describe_holder(before)}, no longer running",
                  file=sys.stderr, flush=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(
            [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:]])[:300],
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "folder": str(Path(folder))}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(record) + "\n").encode())
        yield lock
    finally:
        try:
            lock.unlink(missing_ok=True)
        finally:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _acquire(lock: Path, folder, what: str) -> int:
    """Open and lock ``lock``; the descriptor, or :class:`FolderLockedError` naming the holder."""
    for _ in range(100):
        if fcntl is None:  # pragma: no cover - no flock: an exclusive create, a dead holder's file removed
            try:
                return os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _holder(lock)
                if holder.get("pid") and not _alive(int(holder["pid"])):
                    lock.unlink(missing_ok=True)
                    continue
                raise FolderLockedError(_locked_message(folder, what, holder)) from None
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise FolderLockedError(_locked_message(folder, what, _holder(lock))) from None
        try:  # the holder may have removed the file between our open and our flock: lock the current file
            if os.stat(lock).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    raise FolderLockedError(f"{what} {folder}: could not take its lock {lock}; another process keeps replacing it")


def _locked_message(folder, what: str, holder: dict) -> str:
    pid = holder.get("pid")
    who = _describe_holder(holder) if holder else "another process"
    stop = f", or stop it (kill {pid})" if pid else ""
    return (f"{what} {folder} is being written by {who}; wait for it to finish{stop}, or choose another "
            f"folder (lock: {lock_path(folder)})")
