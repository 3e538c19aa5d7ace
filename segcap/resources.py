"""Files that ship with segcap (YAML configs, class tables, class maps), found from a clone and from an install alike.

The YAML defaults live inside the package, in ``segcap/configs/``, and are package data of the wheel; the
repository's top-level ``configs`` is a symbolic link to that folder, so ``--config configs/segmentation.yaml`` from
the root of a clone reads the file it always read. Anywhere else (an installed package, another working folder), a
name under ``configs/`` that does not exist from the working directory is the shipped file of that name, read through
:mod:`importlib.resources`::

    config_path("configs/pipeline/synthetic.yaml")   # ./configs/... if it exists, else the shipped file
    config_path("/data/my.yaml")                     # a user's file: as given (a missing one stays missing)
    shipped("classes", "aerial10.yaml")              # the shipped file itself

A path that exists is always used as given; only a missing ``configs/...`` name falls back to the shipped copy, so a
user's own file always wins and a typo elsewhere is reported, not replaced. :func:`looked_for` says, for a message,
every place a missing file was looked for.
"""

from __future__ import annotations

import atexit
import contextlib
from importlib.resources import as_file, files
from pathlib import Path

PACKAGE = "segcap"
CONFIGS = "configs"  # the folder name, inside the package and (as a link) at the repository root
# Where the top-level packages are (a clone's root, or site-packages): ``Path(__file__).parents[1] / "configs"`` in
# any of them names the shipped folder, found here even where that folder is not beside them (an installed package).
INSTALL_ROOT = Path(__file__).resolve().parents[1]

_EXTRACTED = contextlib.ExitStack()  # only for a package imported from a zip file: temporary copies, removed at exit
atexit.register(_EXTRACTED.close)


def configs_dir() -> Path:
    """The shipped configs folder (``segcap/configs`` of the installed package, or of the clone)."""
    folder = files(PACKAGE) / CONFIGS
    return folder if isinstance(folder, Path) else _EXTRACTED.enter_context(as_file(folder))


def shipped(*parts: str) -> Path:
    """A shipped file or folder under ``configs/``: ``shipped("classes", "maps")``, ``shipped("composition.yaml")``."""
    return configs_dir().joinpath(*parts)


def shipped_name(path: str | Path) -> Path | None:
    """The name under the shipped configs of a path into a ``configs`` folder, or None for any other path.

    ``configs/llm/tiny.yaml`` (relative, from any working directory) and ``<INSTALL_ROOT>/configs/llm/tiny.yaml``
    (what a module's ``Path(__file__).parents[1] / "configs"`` gives) are both ``llm/tiny.yaml``.
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        base = INSTALL_ROOT / CONFIGS
        if not p.is_relative_to(base):
            return None
        rest = p.relative_to(base)
    else:
        if len(p.parts) < 2 or p.parts[0] != CONFIGS:
            return None
        rest = Path(*p.parts[1:])
    return rest if rest.parts and ".." not in rest.parts else None


def config_path(path: str | Path) -> Path:
    """The file to read for a config path a user (or a default) gives.

    An existing path is returned as given; a missing ``configs/...`` path is the shipped file of that name when there
    is one; any other missing path comes back unchanged, for its reader to report (with :func:`looked_for`).
    """
    p = Path(path).expanduser()
    if p.exists():
        return p
    name = shipped_name(p)
    if name is not None:
        candidate = shipped(*name.parts)
        if candidate.exists():
            return candidate
    return p


def looked_for(path: str | Path) -> str:
    """Where a missing config was looked for, for an error message: ``looked for /cwd/x.yaml and /pkg/configs/x.yaml``."""
    p = Path(path).expanduser()
    places = [str(p if p.is_absolute() else Path.cwd() / p)]
    name = shipped_name(p)
    if name is not None and shipped(*name.parts).resolve() != Path(places[0]).resolve():  # a clone: the same file
        places.append(f"{shipped(*name.parts)} (shipped with segcap)")
    return "looked for " + " and ".join(places)
