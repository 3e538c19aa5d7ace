"""The CNN+LSTM's image encoder: a torchvision backbone (``mobilenet_v2``, ``resnet50``, ``vgg16``) cut at an output
stride, with random weights, a local weights file, or torchvision's own weights.

``encoder_weights``:

* ``None``: random weights (the offline default). A frozen random trunk's BatchNorm layers still hold their initial
  statistics (mean 0, variance 1), and its deep features then vanish; :func:`calibrate_batchnorm` estimates them on
  the training images (one pass without gradients) before the features are cached.
* a file: a state dict (``.pt``/``.pth``/``.bin`` or ``.safetensors``; also a checkpoint holding one under
  ``state_dict`` or ``model``) of the torchvision model, possibly under a prefix: a segcap segmentation ``model.pt``
  with the same encoder (keys ``encoder.features...``) loads as well. Every tensor of the kept trunk must be found.
* a torchvision weights name (``IMAGENET1K_V1``, ``IMAGENET1K_V2``, ``DEFAULT``...): torchvision's loader, from torch's
  cache (``torch.hub.get_dir()/checkpoints``) with no network call when the file is there; else downloaded when the
  machine is online; offline (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` set, or download.pytorch.org silent for
  3 s) it stops at once with one message saying which file to download and where to put it.

``encoder_stride`` keeps the trunk's layers up to the deepest one whose output stride is at most that value:
8 keeps ``features[:7]`` of mobilenet_v2 (32 channels), ``conv1..layer2`` of resnet50 (512), ``features[:23]`` of
vgg16 (512); 32 keeps the whole trunk as Show, Attend and Tell does with ImageNet weights.
"""

from __future__ import annotations

import functools
import os
import urllib.error
import urllib.request
from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn

from segcap import hub
from segcap.errors import ConfigError, one_line, weights_file_problem

ENCODERS = ("mobilenet_v2", "resnet50", "vgg16")
STRIDES = (4, 8, 16, 32)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PROBE_URL = "https://download.pytorch.org"
PROBE_TIMEOUT = 3.0
CALIBRATION_IMAGES = 256  # training images that estimate a random trunk's BatchNorm statistics (more change little)
_RESNET_TRUNK = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


def torchvision_names(encoder: str) -> list[str]:
    """The weights names torchvision knows for ``encoder`` (``DEFAULT`` first)."""
    return ["DEFAULT", *(w.name for w in torchvision.models.get_model_weights(encoder))]


def _torchvision_weights(encoder: str, name: str):
    enum = torchvision.models.get_model_weights(encoder)
    return enum.DEFAULT if name == "DEFAULT" else enum[name]


def _cached_path(url: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


@functools.cache
def _reachable(url: str, timeout: float) -> bool:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # an HTTP answer, whatever it says, means the host is there
    except Exception:  # noqa: BLE001 - DNS, refused, timeout, proxy, TLS: all mean "cannot download now"
        return False
    return True


def _offline_reason() -> str | None:
    flag = hub.offline_flag()
    if flag:
        return f"{flag} is set"
    if not _reachable(PROBE_URL, PROBE_TIMEOUT):
        return f"{PROBE_URL} did not answer within {PROBE_TIMEOUT:g} s"
    return None


def is_weights_name(encoder: str, weights: str) -> bool:
    """Whether ``weights`` is one of torchvision's weights names for ``encoder`` (and not an existing file)."""
    return not Path(weights).expanduser().exists() and weights in torchvision_names(encoder)


def encoder_weights_problems(encoder: str, weights: str | Path | None) -> list[str]:
    """Why ``weights`` cannot be used for ``encoder`` now (empty: it can). Makes no network call when the flag is set
    or the file is cached; at most one 3 s probe otherwise."""
    if weights is None or encoder not in ENCODERS:
        return []
    name = str(weights)
    if is_weights_name(encoder, name):
        w = _torchvision_weights(encoder, name)
        cached = _cached_path(w.url)
        if cached.is_file():
            return []
        reason = _offline_reason()
        if reason is None:
            return []
        flag = hub.offline_flag()
        unset = f"; or unset {flag.split('=')[0]} where this machine has network" if flag else ""
        return [
            f"encoder_weights {name}: torchvision's {encoder} weights ({w.url}) are not in torch's cache "
            f"{cached.parent} and cannot be downloaded now ({reason}). On a machine with network download {w.url} "
            f"and copy it to {cached} here (torchvision then loads it from there), or pass the downloaded file's "
            f"path as encoder_weights{unset}; leave encoder_weights empty for random weights"
        ]
    if not Path(name).expanduser().is_file():
        return [
            f"encoder_weights {name}: no such file and not a torchvision weights name of {encoder} "
            f"({', '.join(torchvision_names(encoder))}); pass a weights file, one of those names, or nothing "
            "(random weights)"
        ]
    return []


def trunk_of(encoder: str, model: nn.Module) -> nn.Sequential:
    """The convolutional trunk of a torchvision classification model, as a Sequential (no pooling, no classifier)."""
    if encoder == "resnet50":
        return nn.Sequential(OrderedDict((k, getattr(model, k)) for k in _RESNET_TRUNK))
    return model.features


def _file_prefix(own_keys: list[str], file_keys: list[str]) -> str:
    """The prefix under which the file holds the trunk's tensors (``features.``, ``encoder.features.``, ``""``...):
    of the prefixes that end at a dot before the trunk's first key, the one that finds the most tensors."""
    first, keys = own_keys[0], set(file_keys)
    candidates = {k[: len(k) - len(first)] for k in file_keys if k.endswith(first)}
    candidates = {p for p in candidates if p == "" or p.endswith(".")}
    if not candidates:
        return ""
    return max(sorted(candidates, key=len), key=lambda p: sum(p + k in keys for k in own_keys))


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        size = path.stat().st_size if path.is_file() else None
        raise ConfigError(f"encoder_weights {path}: not a readable weights file: {weights_file_problem(e, size)}; "
                          "pass a torchvision state dict (.pt, .pth or .safetensors), or leave encoder_weights empty "
                          "for random weights") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"encoder_weights {path}: holds no state dict of tensors; pass a torchvision state dict")
    return state


def build_trunk(encoder: str, stride: int, weights: str | Path | None = None) -> tuple[nn.Sequential, int, str]:
    """The trunk of ``encoder`` cut at ``stride``, with ``weights``; returns (trunk, channels, where the weights came
    from)."""
    if encoder not in ENCODERS:
        raise ConfigError(f"encoder {encoder!r} is not one of {', '.join(ENCODERS)}")
    problems = encoder_weights_problems(encoder, weights)
    if problems:
        raise ConfigError(problems)
    model = getattr(torchvision.models, encoder)(weights=None)
    source = "random"
    if weights is not None and is_weights_name(encoder, str(weights)):
        w = _torchvision_weights(encoder, str(weights))
        try:
            model.load_state_dict(w.get_state_dict(progress=False, check_hash=True))
        except (OSError, RuntimeError, urllib.error.URLError) as e:
            raise ConfigError(f"encoder_weights {weights}: torchvision could not load {w.url} ({one_line(e)}); "
                              f"download it to {_cached_path(w.url)} or pass the file as encoder_weights") from e
        source = f"torchvision {encoder} {w.name}"
    trunk = cut_at_stride(trunk_of(encoder, model), stride)
    if weights is not None and source == "random":
        path = Path(weights).expanduser()
        _load_trunk_file(trunk, encoder, path)
        source = str(path)
    channels = _out_channels(trunk)
    return trunk, channels, source


def _load_trunk_file(trunk: nn.Sequential, encoder: str, path: Path) -> None:
    state = _read_state(path)
    own = trunk.state_dict()
    fp = _file_prefix(list(own), list(state))
    found = {k: state[fp + k] for k in own if fp + k in state}
    missing = [k for k in own if k not in found]
    if missing:
        raise ConfigError(
            f"encoder_weights {path}: {len(missing)} of the {len(own)} tensors of the {encoder} trunk are not in "
            f"the file (first missing: {fp}{missing[0]}); pass a torchvision {encoder} state dict, or a segcap "
            f"segmentation model.pt trained with encoder {encoder}"
        )
    bad = [k for k, v in found.items() if v.shape != own[k].shape]
    if bad:
        raise ConfigError(f"encoder_weights {path}: {fp}{bad[0]} has shape {tuple(found[bad[0]].shape)}, the "
                          f"{encoder} trunk expects {tuple(own[bad[0]].shape)}; the file is of another model")
    trunk.load_state_dict(found)


def cut_at_stride(trunk: nn.Sequential, stride: int) -> nn.Sequential:
    """The layers of ``trunk`` up to the deepest one whose output stride is at most ``stride``."""
    if stride not in STRIDES:
        raise ConfigError(f"encoder_stride {stride} is not one of {', '.join(map(str, STRIDES))}")
    was = trunk.training
    trunk.eval()
    x = torch.zeros(1, 3, 64, 64)
    keep = 0
    with torch.no_grad():
        for i, layer in enumerate(trunk):
            x = layer(x)
            if 64 // x.shape[-1] > stride:
                break
            keep = i + 1
    trunk.train(was)
    return trunk[:keep]


def _out_channels(trunk: nn.Sequential) -> int:
    was = trunk.training
    trunk.eval()
    with torch.no_grad():
        c = trunk(torch.zeros(1, 3, 64, 64)).shape[1]
    trunk.train(was)
    return int(c)


@torch.no_grad()
def calibrate_batchnorm(trunk: nn.Module, batches) -> int:
    """Estimate every BatchNorm's running mean and variance on ``batches`` (image tensors; cumulative average, no
    gradients, weights untouched); returns the number of images seen. Leaves the trunk in eval mode."""
    norms = [m for m in trunk.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over every batch
    trunk.train()
    n = 0
    for x in batches:
        trunk(x)
        n += len(x)
    for m, mom in zip(norms, saved, strict=True):
        m.momentum = mom
    trunk.eval()
    return n
