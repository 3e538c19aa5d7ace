"""Pretrained weights from the Hugging Face Hub, cache first: smp's ImageNet encoder and transformers' base models.

Both libraries download through ``huggingface_hub`` and keep what they downloaded in its cache folder
(``$HF_HUB_CACHE``, by default ``$HF_HOME/hub`` = ``~/.cache/huggingface/hub``). Before any training work, segcap
decides whether a named model can be had, cheapest test first:

1. its files are in the cache: they are loaded inside :func:`cache_only` (huggingface_hub's offline mode for that
   call), so no request is made at all, not even the libraries' own checks for newer revisions or adapter files;
2. else ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) is set, as the Makefile and the tests set it: offline;
3. else one HEAD request to the hub endpoint (``$HF_ENDPOINT``, default https://huggingface.co; the environment's
   proxies apply), at most :data:`PROBE_TIMEOUT` seconds, once per process: any HTTP answer means online, and the
   library downloads as it always does; no answer means offline.

Offline and not cached, the caller raises one :class:`~segcap.errors.ConfigError` that says what to download and
where to put it (:func:`offline_hint` writes the common part), instead of the libraries' retries and tracebacks.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from pathlib import Path

from huggingface_hub import constants, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import get_session, validate_repo_id

try:  # huggingface_hub 2.x speaks httpx2, 1.x httpx
    from httpx2 import HTTPError as _TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import HTTPError as _TransportError

PROBE_TIMEOUT = 3.0  # seconds for the one reachability request
DOWNLOAD_ERRORS = (OSError, _TransportError)  # what a failed hub download raises (huggingface_hub's errors included)
_TRUE = {"1", "on", "yes", "true"}


def cache_dir() -> Path:
    """The hub cache folder the libraries read and fill (``$HF_HUB_CACHE``)."""
    return Path(constants.HF_HUB_CACHE)


def repo_cache_folder(repo_id: str) -> Path:
    """Where one model repository lives inside :func:`cache_dir` (``models--org--name``)."""
    return cache_dir() / ("models--" + repo_id.replace("/", "--"))


def cached_file(repo_id: str, filename: str, revision: str | None = None) -> Path | None:
    """The cached copy of one file of a model repository (``revision``: a commit, branch or tag; None: main), or None."""
    found = try_to_load_from_cache(repo_id, filename, revision=revision)
    return Path(found) if isinstance(found, str) else None


def is_repo_id(name: str) -> bool:
    """True when ``name`` has the form of a hub model id (``name`` or ``org/name``) rather than of a path."""
    if not name or name.startswith(("/", ".", "~")) or "\\" in name:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


@contextlib.contextmanager
def cache_only() -> Iterator[None]:
    """huggingface_hub's offline mode for the duration of a load, as ``HF_HUB_OFFLINE=1`` gives a whole process.

    Every file then comes from the cache and no request is made: transformers 5 would otherwise look for an
    ``adapter_config.json`` of a cached hub id online even with ``local_files_only=True`` (five retries when the
    network is down), and huggingface_hub fetches a registry for its user agent on its first request.
    """
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def offline_flag() -> str | None:
    """The setting that keeps huggingface_hub offline (e.g. ``HF_HUB_OFFLINE=1``), or None.

    The environment is read now and as huggingface_hub read it on import (it keeps that value).
    """
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return f"{var}={os.environ[var]}"
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1 (set when huggingface_hub was imported)"
    return None


def hub_reachable(timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether the hub endpoint answers one HEAD request within ``timeout`` seconds (asked once per process)."""
    return _probe(constants.ENDPOINT, timeout)


@functools.cache
def _probe(endpoint: str, timeout: float) -> bool:
    try:
        get_session().head(endpoint, timeout=timeout)
    except Exception:  # noqa: BLE001 - no answer for any reason (DNS, refused, timeout, proxy, TLS) is "offline"
        return False
    return True


def offline_reason() -> str | None:
    """Why nothing can be downloaded now (the offline flag, or an endpoint that does not answer); None when online."""
    flag = offline_flag()
    if flag:
        return f"{flag} is set"
    if not hub_reachable():
        return f"{constants.ENDPOINT} did not answer within {PROBE_TIMEOUT:g} s"
    return None


def repo_page(repo_id: str) -> str:
    """The web page of a model repository (where a gated model's licence is accepted)."""
    return f"{constants.ENDPOINT}/{repo_id}"


def file_url(repo_id: str, filename: str, revision: str | None = None) -> str:
    """The download address of one file of a model repository."""
    return hf_hub_url(repo_id, filename, revision=revision)


def offline_hint(repo_id: str, reason: str, files: tuple[str, ...] = (), revision: str | None = None,
                 missing: str = "") -> str:
    """The common part of an offline message: "not in the cache ... (reason). On a machine with network run ...".

    The caller writes what is missing before it ("<option> <value>: <what> is ") and any local-path alternative after;
    ``missing`` names the parts absent from a partly cached repository.
    """
    rev = f" --revision {revision}" if revision else ""
    names = "".join(f" {f}" for f in files)
    flag = offline_flag()
    unset = f"; or unset {flag.split('=')[0]} where this machine has network" if flag else ""
    where = f"not (all) in the Hugging Face cache {cache_dir()} (missing: {missing})" if missing else \
        f"not in the Hugging Face cache {cache_dir()}"
    return (
        f"{where} and cannot be downloaded now ({reason}). On a machine with "
        f"network run `hf download {repo_id}{names}{rev}` (the hf command comes with huggingface_hub) and copy its "
        f"{repo_cache_folder(repo_id).relative_to(cache_dir())} folder into {cache_dir()} here (or point "
        f"HF_HUB_CACHE at a copy){unset}"
    )
