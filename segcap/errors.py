"""Error types for user-facing problems: bad input, bad options, missing data.

Every message says what was wrong, which file (or option), and how to fix it. Entry points run through
:func:`segcap.cli.run`, which prints the message on one line and exits with :attr:`SegcapError.exit_code` (2).
Programming errors stay ordinary exceptions with a traceback.
"""

from __future__ import annotations


class SegcapError(Exception):
    """Base of every user-facing error; exit code 2 (usage and data errors)."""

    exit_code = 2


class DatasetNotFoundError(SegcapError, FileNotFoundError):
    """A dataset root or one of its expected files is missing."""


class DataError(SegcapError, ValueError):
    """A file exists but its content is wrong (corrupt image, bad ids, bad JSON, size mismatch...)."""


class ConfigError(SegcapError, ValueError):
    """Options that are invalid, conflict with each other, or name something that does not exist."""

    def __init__(self, problems: str | list[str]):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        if len(self.problems) == 1:
            msg = self.problems[0]
        else:
            msg = f"{len(self.problems)} problems with the options:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(msg)


class OutputExistsError(SegcapError, FileExistsError):
    """An output would overwrite something that already exists."""

    def __init__(self, path, what: str = "output"):
        super().__init__(f"{what} already exists: {path}; pass --overwrite to replace it, or choose another path")
        self.path = path


class OutputNotWritableError(SegcapError, PermissionError):
    """An output cannot be written where it was asked for: a file used as a folder, a read-only or full disk, a folder
    without write permission, a pseudo file system."""


class FolderLockedError(SegcapError):
    """Another process is writing the same run or checkpoint folder."""
