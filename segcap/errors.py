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


def one_line(e: BaseException, limit: int = 160) -> str:
    """A library's exception as one short line for a message of ours: its type and the first sentence of its first
    line (libraries write paragraphs of advice, tracebacks of their own, links; a user message names the cause)."""
    mark = getattr(e, "problem_mark", None)  # YAML's errors: the problem and where, instead of a drawing of it
    if mark is not None and getattr(e, "problem", None):
        return f"{e.problem} at line {mark.line + 1}, column {mark.column + 1}"
    text = " ".join(str(e).strip().splitlines()[:1]).strip()
    first = text.split(". ")[0].rstrip(".")
    if len(first) > limit:
        first = first[: limit - 3].rstrip() + "..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def weights_file_problem(e: BaseException, size: int | None = None) -> str:
    """Why ``torch.load`` (``weights_only``) or safetensors could not read a weights file, in words of ours: truncated
    or corrupt, pickled Python objects that a weights-only load refuses, or not a weights file at all. ``size``: the
    file's size in bytes, when known."""
    text = str(e)
    size_text = f"{size:,} bytes, " if size is not None else ""
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        found = next((line.split("GLOBAL", 1)[1].split()[0] for line in text.splitlines() if "GLOBAL" in line), "")
        what = f" ({found})" if found else ""
        return (f"it holds pickled Python objects{what}, not only tensors, which a weights-only torch.load refuses "
                "to run; save the state dict alone (torch.save(model.state_dict(), path))")
    corrupt = ("central directory", "zip archive", "corrupted", "unexpected EOF", "Ran out of input",
               "incomplete", "truncated", "invalid load key", "Error while deserializing header")
    if isinstance(e, EOFError) or any(c in text for c in corrupt):
        return f"{size_text}truncated or corrupt (an interrupted copy or save?)"
    return f"{size_text}not a PyTorch (.pt/.pth) or safetensors weights file ({one_line(e, 100)})"
