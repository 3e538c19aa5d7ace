"""UNet with a MobileNetV2 encoder (segmentation-models-pytorch), and the :class:`Segmenter` that runs a checkpoint.

A checkpoint is a folder (written by ``python -m segmentation.train``)::

    model.pt       state dict of the network (best validation mIoU)
    config.yaml    architecture, class table, input scale, normalisation, training options
    metrics.json   validation (and caption-set) metrics, history per epoch

Library use (the pipeline's)::

    from segmentation.model import load_segmenter
    seg = load_segmenter("runs/segmentation")
    masks = seg.predict([rgb_uint8, ...])          # list of (H, W) uint8 group ids, same size as each input
    seg.table.names                                # what the ids mean
    seg.scenes([rgb_uint8, ...])                   # top 3 scenes of each image by the scene head, or None without one

A scene head (``python -m segmentation.scene``: a linear softmax over a caption set's categories on the encoder's
pooled features) loads with the checkpoint when its folder holds ``scene_head.pt`` and ``scene_head.json``, or from
the folder ``load_segmenter(..., scene_head=DIR)`` names; it must have been fitted on the same model.pt.

``predict`` keeps each image's aspect: it resizes by a ground-resolution factor ``scale`` (1.0 for images at the
resolution the model was trained for, such as the caption set; the checkpoint's ``input.drone_scale``, e.g. 0.25,
for photos of the drone set itself), pads to a multiple of 32, runs same-size images in batches, cuts large inputs
into overlapping tiles, and returns masks at the input size.

Encoder weights for training (:func:`build_model`, ``segmentation.train --encoder-weights``):

* empty (None): random weights, the offline default;
* ``imagenet``: smp's own ImageNet weights. segmentation-models-pytorch 0.6 downloads them with ``hf_hub_download``
  from the hub repository ``smp-hub/mobilenet_v2.imagenet`` at a pinned commit (``config.json`` and
  ``model.safetensors``, 9 MB) into the Hugging Face cache (``$HF_HUB_CACHE``, default ~/.cache/huggingface/hub).
  When both files are cached they are used with no network call (:func:`segcap.hub.cache_only`); else, offline
  (``HF_HUB_OFFLINE=1`` or no answer from the hub, see :mod:`segcap.hub`), :func:`encoder_weights_problems` says
  what to download and where, before any training work;
* a local file: a state dict (``.pth``/``.pt`` through ``torch.load``, or ``.safetensors``) of the encoder, of a
  torchvision/timm ``mobilenet_v2`` (its classifier is dropped), or of a whole UNet (its ``encoder.`` keys are
  used). smp's ``model.safetensors`` above and torchvision's ``mobilenet_v2-b0353104.pth`` both fit.

The word ``imagenet`` always means smp's weights; a local file needs another name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import pickle
import sys
from collections import defaultdict
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml

from aerialdata.classes import ClassTable, class_table_from_dict
from segcap import hub
from segcap.errors import ConfigError, SegcapError, one_line, weights_file_problem
from segcap.options import PositiveFloat, PositiveInt, checked

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAD_MULTIPLE = 32  # the UNet halves the size five times
CONFIG_FORMAT = "segcap.segmentation/1"
IMAGENET = "imagenet"  # encoder_weights keyword: smp's own ImageNet weights, through the Hugging Face cache
SMP_WEIGHT_FILES = ("config.json", "model.safetensors")  # what smp 0.6's get_encoder downloads from the hub repo
SCENE_HEAD_SCHEMA = "segcap.scene_head/1"
SCENE_HEAD_FILES = ("scene_head.pt", "scene_head.json")  # a scene head's folder: its weights, then what it means
SCENES_SCHEMA = "segcap.scenes/1"  # segmentation.predict's scenes.json beside the masks
SCENE_TOP = 3  # scenes per image in records and scenes.json


class CheckpointNotFoundError(SegcapError, FileNotFoundError):
    """A segmentation checkpoint folder, or a file in it, is missing."""


def default_architecture() -> dict:
    return {"name": "Unet", "encoder_name": "mobilenet_v2", "decoder_channels": [128, 64, 32, 16, 16], "in_channels": 3}


def is_imagenet(weights: str | Path | None) -> bool:
    """True when ``weights`` names smp's ImageNet weights (the word ``imagenet``, as a string or a Path)."""
    return weights is not None and str(weights) == IMAGENET


def imagenet_source(encoder_name: str = "mobilenet_v2") -> tuple[str, str]:
    """(hub repository, pinned commit) that smp downloads ``encoder_name``'s ImageNet weights from, read from smp."""
    from segmentation_models_pytorch.encoders import encoders

    settings = encoders.get(encoder_name, {}).get("pretrained_settings", {}).get(IMAGENET)
    if not settings:
        raise ConfigError(f"encoder_weights imagenet: segmentation-models-pytorch has no ImageNet weights for the "
                          f"encoder {encoder_name!r}; pass a local weights file or leave encoder_weights empty")
    return settings["repo_id"], settings["revision"]


def imagenet_cached(encoder_name: str = "mobilenet_v2") -> bool:
    """Whether smp's ImageNet weights of ``encoder_name`` are in the Hugging Face cache (then no network is used)."""
    repo, rev = imagenet_source(encoder_name)
    return all(hub.cached_file(repo, f, rev) is not None for f in SMP_WEIGHT_FILES)


def _imagenet_unavailable(encoder_name: str, reason: str) -> str:
    repo, rev = imagenet_source(encoder_name)
    return (
        f"encoder_weights imagenet: smp's ImageNet weights of {encoder_name} ({repo}) are "
        + hub.offline_hint(repo, reason, SMP_WEIGHT_FILES, rev)
        + f"; or download {hub.file_url(repo, 'model.safetensors', rev)} and pass that file as encoder_weights "
        "(--encoder-weights /path/to/model.safetensors); or leave encoder_weights empty for random weights"
    )


def encoder_weights_problems(weights: str | Path | None, encoder_name: str = "mobilenet_v2") -> list[str]:
    """Why ``weights`` cannot be used now (empty: usable): a missing file, or ImageNet weights neither cached nor
    downloadable (cache first; then ``HF_HUB_OFFLINE``; then one short request to the hub, see :mod:`segcap.hub`)."""
    if weights is None or str(weights) == "":
        return []
    if is_imagenet(weights):
        if imagenet_cached(encoder_name):
            return []
        reason = hub.offline_reason()
        return [] if reason is None else [_imagenet_unavailable(encoder_name, reason)]
    path = Path(weights)
    if not path.is_file():
        return [
            f"encoder_weights {path}: no such file; pass imagenet (smp's ImageNet weights, downloaded or from the "
            "Hugging Face cache), a local state dict of the encoder (.pth or .safetensors, e.g. torchvision's "
            "mobilenet_v2), or leave it empty for random weights"
        ]
    return []


def build_model(architecture: dict, num_classes: int, encoder_weights: str | Path | None = None) -> torch.nn.Module:
    """``smp.Unet`` from an architecture dict, its encoder from ``encoder_weights``.

    ``encoder_weights``: None (random), ``imagenet`` (smp's loader: the Hugging Face cache, or a download when online;
    a :class:`ConfigError` saying what to download when neither works), or a local state-dict file (see the module
    docstring for what fits).
    """
    import segmentation_models_pytorch as smp

    arch = {**default_architecture(), **(architecture or {})}
    if arch["name"] != "Unet":
        raise ConfigError(f"architecture {arch['name']!r} is not supported; segcap trains smp.Unet")
    imagenet = is_imagenet(encoder_weights)
    if encoder_weights is not None and str(encoder_weights):
        problems = encoder_weights_problems(encoder_weights, arch["encoder_name"])
        if problems:
            raise ConfigError(problems)
    kwargs = dict(encoder_name=arch["encoder_name"], in_channels=int(arch["in_channels"]), classes=num_classes,
                  decoder_channels=list(arch["decoder_channels"]))
    if imagenet:
        cached = imagenet_cached(arch["encoder_name"])
        try:
            with hub.cache_only() if cached else contextlib.nullcontext():
                return smp.Unet(encoder_weights=IMAGENET, **kwargs)  # smp's loader: hf_hub_download, then load_file
        except hub.DOWNLOAD_ERRORS as e:  # the network went away during the download, a proxy refused it...
            raise ConfigError(_imagenet_unavailable(arch["encoder_name"], one_line(e))) from e
    model = smp.Unet(encoder_weights=None, **kwargs)
    if encoder_weights is not None and str(encoder_weights):
        load_encoder_weights(model, encoder_weights)
    return model


def read_state_dict(path: Path) -> dict:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` file (``weights_only``: no code is run)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    return state


def _size(path: Path) -> int | None:
    try:
        return Path(path).stat().st_size
    except OSError:
        return None


def load_encoder_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a local encoder weights file into ``model.encoder``; clear error when it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(encoder_weights_problems(path))
    try:
        state = read_state_dict(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error here
        raise ConfigError(f"encoder_weights {path}: not a readable state dict: {weights_file_problem(e, _size(path))}; "
                          "pass a mobilenet_v2 state dict (.pth/.pt, or .safetensors), or leave encoder_weights empty "
                          "for random weights") from e
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: holds a {type(state).__name__}, not a state dict (a mapping of names to tensors)")
    if any(k.startswith("encoder.") for k in state):
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    state = {k: v for k, v in state.items() if not k.startswith(("classifier.", "fc."))}
    own = model.encoder.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(matched) < 0.9 * len(own):
        raise ConfigError(
            f"{path}: only {len(matched)} of the encoder's {len(own)} tensors match by name and shape; "
            "expected a mobilenet_v2 state dict (keys like features.0.0.weight)"
        )
    model.encoder.load_state_dict(matched, strict=False)


def pad_to_multiple(x: torch.Tensor, multiple: int = PAD_MULTIPLE) -> tuple[torch.Tensor, int, int]:
    """Zero-pad (N, C, H, W) at the bottom/right to a multiple of ``multiple``; returns the tensor and (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x, h, w


# ---------------------------------------------------------------- scene head
class SceneHead(torch.nn.Module):
    """A linear softmax over scene classes (a caption set's categories) on the encoder's pooled features.

    ``python -m segmentation.scene`` fits it and writes it to a folder as :data:`SCENE_HEAD_FILES`; the segmenter
    loads it with the checkpoint (:func:`load_segmenter`) and :meth:`Segmenter.scenes` applies it.

    Args:
        classes: scene names in index order.
        features: which features it reads (:func:`scene_features`): ``strides``, the encoder stages (by stride) whose
            channels are averaged over the image, and ``colour``, whether each RGB channel's mean and standard
            deviation follow them.
        dim: the length of those features (the standardisation's mean and std are buffers of this length).
        encoder: an encoder of its own whose features it reads (``features["own_encoder"]``; its weights are saved
            with the head), instead of the segmenter's: e.g. the ImageNet encoder the segmenter started from, when
            fine-tuning on little labelled data has worn away what it knew of scenes. None: the segmenter's.
    """

    def __init__(self, classes: list[str], features: dict, dim: int, encoder: torch.nn.Module | None = None):
        super().__init__()
        self.classes = list(classes)
        self.features = dict(features)
        self.encoder = encoder
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))
        self.linear = torch.nn.Linear(dim, len(self.classes))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(N, dim) features -> (N, classes) logits."""
        return self.linear((f - self.mean) / self.std)

    @torch.inference_mode()
    def top(self, f: torch.Tensor | np.ndarray, k: int = SCENE_TOP) -> list[list[dict]]:
        """Each row's ``k`` most probable scenes, most probable first: ``[{"name", "probability"}, ...]`` (3 decimals)."""
        f = torch.as_tensor(np.asarray(f, dtype=np.float32))
        prob, idx = torch.softmax(self(f), 1).topk(min(k, len(self.classes)), 1)
        return [[{"name": self.classes[i], "probability": round(float(q), 3)} for q, i in zip(p, ix, strict=True)]
                for p, ix in zip(prob.tolist(), idx.tolist(), strict=True)]


SCENE_VIEWS = (1, 4, 8)  # a scene head's views: the image alone, its 4 rotations, or those and their mirror images
SceneViews = Literal[SCENE_VIEWS]  # the option's type: one of SCENE_VIEWS


def dihedral(image: np.ndarray, k: int) -> np.ndarray:
    """View ``k`` (0-7) of an (H, W, ...) image: turned ``k % 4`` quarter turns anticlockwise, then mirrored left to
    right when ``k >= 4``. An aerial photo has no up: its 8 views show the same scene (view 0 is the image itself)."""
    view = np.rot90(image, k % 4) if k % 4 else image
    return np.ascontiguousarray(view[:, ::-1] if k >= 4 else view)


def scene_features(pools: dict[str, np.ndarray], features: dict) -> np.ndarray:
    """(N, dim) float32: the pooled stages ``features["strides"]`` names (``pools["s16"]``, ...) side by side, then the
    colour statistics when ``features["colour"]`` (:meth:`Segmenter.encoder_pools` gives ``pools``)."""
    parts = [pools[f"s{int(s)}"] for s in features["strides"]] + ([pools["colour"]] if features.get("colour") else [])
    return np.concatenate(parts, axis=1).astype(np.float32)


def weights_digest(path: str | Path) -> str:
    """A digest of a weights file's bytes: a scene head records its checkpoint's, to refuse another encoder."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_scene_head(folder: str | Path, checkpoint: str | Path | None = None) -> SceneHead:
    """The scene head in ``folder`` (:data:`SCENE_HEAD_FILES`), its ``info`` attribute the JSON beside it.

    With ``checkpoint``, the head must have been fitted on that checkpoint's encoder (the digest of its model.pt,
    recorded in the JSON): features of another encoder mean nothing to it. Every problem is a :class:`ConfigError`
    that says how to fix it.
    """
    folder = Path(folder)
    weights, meta = (folder / name for name in SCENE_HEAD_FILES)
    fix = "fit one with python -m segmentation.scene --checkpoint CHECKPOINT --captions CAPTION_SET"
    for f in (weights, meta):
        if not f.is_file():
            raise ConfigError(f"scene head {folder}: no {f.name} there; {fix}")
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{meta}: not JSON ({e}); {fix} --overwrite") from e
    if not isinstance(info, dict) or info.get("schema") != SCENE_HEAD_SCHEMA:
        raise ConfigError(f"{meta}: not a scene head description (expected schema {SCENE_HEAD_SCHEMA}); {fix}")
    classes, features = info.get("classes"), info.get("features") or {}
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)) \
            or not isinstance(features.get("strides"), list) or not isinstance(features.get("dim"), int):
        raise ConfigError(f"{meta}: needs classes (2 or more names) and features (strides, colour, dim); {fix}")
    own = bool(features.get("own_encoder"))
    if checkpoint is not None and not own:  # with an encoder of its own, the checkpoint's weights do not matter
        want = (info.get("checkpoint") or {}).get("weights_digest")
        have = weights_digest(Path(checkpoint) / "model.pt")
        if want != have:
            raise ConfigError(f"scene head {folder} was fitted on the encoder of another model.pt than "
                              f"{Path(checkpoint) / 'model.pt'} (trained on {(info.get('checkpoint') or {}).get('folder')}); "
                              f"fit it again: python -m segmentation.scene --checkpoint {checkpoint} --captions "
                              f"{(info.get('trained_on') or {}).get('captions', 'CAPTION_SET')} --out {folder} --overwrite")
    head = SceneHead(classes, features, features["dim"], encoder=scene_encoder(features) if own else None)
    try:
        head.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as e:
        raise ConfigError(f"{weights}: not the head {meta.name} describes ({one_line(e)}); {fix} --overwrite") from e
    head.info = info
    head.folder = folder
    head.digest = weights_digest(weights)
    return head.eval()


def scene_encoder(features: dict, weights: str | Path | None = None) -> torch.nn.Module:
    """An smp encoder (``features["encoder"]``, default mobilenet_v2) for a scene head of its own: random weights
    (a saved head's are loaded over them), or ``weights`` as :func:`build_model` takes them (imagenet, a file)."""
    arch = {**default_architecture(), "encoder_name": features.get("encoder", "mobilenet_v2")}
    return build_model(arch, 2, encoder_weights=weights).encoder.eval()


def _by_size(images: list[np.ndarray]) -> dict[tuple[int, int], list[int]]:
    """Indices of the images grouped by (H, W); a :class:`ConfigError` for anything not (H, W, 3) uint8."""
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, im in enumerate(images):
        im = np.asarray(im)
        if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
            raise ConfigError(f"image {i}: expected an (H, W, 3) uint8 RGB array, got {im.dtype} {im.shape}")
        by_size[im.shape[:2]].append(i)
    return by_size


class Segmenter:
    """A trained UNet with its class table: RGB uint8 images in, group-id masks out.

    Args:
        model: the network (eval mode is set here).
        table: the class table whose ids the network predicts.
        config: the checkpoint's config dict (normalisation and input scale are read from it).
        device: torch device for inference.
        scene_head: a :class:`SceneHead` fitted on this network's encoder (:meth:`scenes`); None: no scenes.
    """

    def __init__(self, model: torch.nn.Module, table: ClassTable, config: dict | None = None, device: str = "cpu",
                 scene_head: SceneHead | None = None):
        self.config = config or {}
        self.scene_head = scene_head
        self.table = table
        self.device = torch.device(device)
        norm = self.config.get("normalisation", {})
        self.mean = torch.tensor(norm.get("mean", IMAGENET_MEAN), dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(norm.get("std", IMAGENET_STD), dtype=torch.float32).view(1, 3, 1, 1) * 255
        self.mean, self.std = self.mean.to(self.device), self.std.to(self.device)
        self.channels_last = self.device.type == "cpu"
        model = model.to(self.device).eval()
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        inp = self.config.get("input", {})
        self.drone_scale = float(inp.get("drone_scale", 1.0))
        self.tile = int(inp.get("tile_size", 1024))

    # ---------------------------------------------------------------- forward
    def _to_tensor(self, images: list[np.ndarray]) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> normalised (N, 3, H, W) float, channels-last on CPU (the permute gives it free)."""
        x = torch.from_numpy(np.stack(images)).to(self.device).permute(0, 3, 1, 2).float()
        x = (x - self.mean) / self.std
        return x if self.channels_last else x.contiguous()

    def _forward(self, xp: torch.Tensor) -> torch.Tensor:
        """The network on a normalised batch, padded to 32 here; float32 logits at the batch's size."""
        xp, h, w = pad_to_multiple(xp)
        if self.channels_last:
            xp = xp.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", enabled=self.device.type == "cuda"):
            out = self.model(xp)
        return out[..., :h, :w].float()

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, C, H, W) logits, any H, W (padded to 32, tiled when large)."""
        h, w = x.shape[-2:]
        if max(h, w) > self.tile:
            return self._tiled(x)
        return self._forward(x)

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Whole logits from sliding windows (:func:`tile_starts`), blended in the overlaps (:func:`tile_weights`).

        It holds the logits of the whole image: :meth:`predict` segments large images with :meth:`_segment_large`,
        whose memory does not grow with the image's height.
        """
        n, _, h, w = x.shape
        t, ov = self.tile, tile_overlap(self.tile)
        ys, xs = tile_starts(h, t), tile_starts(w, t)
        out = torch.zeros((n, self.table.num_classes, h, w), device=x.device)
        for r, y0 in enumerate(ys):
            th = min(t, h - y0)
            wy = tile_weights(th, ov, r > 0, r < len(ys) - 1, x.device)
            for c, x0 in enumerate(xs):
                tw = min(t, w - x0)
                wx = tile_weights(tw, ov, c > 0, c < len(xs) - 1, x.device)
                o = self._forward(x[..., y0 : y0 + th, x0 : x0 + tw])
                out[..., y0 : y0 + th, x0 : x0 + tw] += o * wy[:, None] * wx[None, :]
        return out  # the weights sum to 1 at every pixel: a blend, not a sum

    @torch.inference_mode()
    def _segment_large(self, image: np.ndarray, tiles_per_pass: int = 4) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) uint8 ids by sliding windows, the overlaps blended, in memory that does not grow
        with H: beyond the image and its mask, it holds one pass of tiles and the overlap strip below the current
        row of tiles (C x overlap x W floats: 61 MB for a 12000 px wide image with 10 classes).

        1. Tiles of ``tile`` px start every ``tile - overlap`` px (:func:`tile_starts`); the last ones are cropped.
        2. Each tile's logits are weighted by ramps across the overlaps (:func:`tile_weights`, which sum to 1).
        3. Tiles go in row order. A tile adds what its left neighbour left (``right``: C x th x ov) and what the row
           above left (``below``: C x ov x W), then its pixels that no later tile covers are final (argmax); its own
           right strip goes to the next tile, its bottom strip to the next row.
        """
        h, w = image.shape[:2]
        t, ov, n_cls = self.tile, tile_overlap(self.tile), self.table.num_classes
        ys, xs = tile_starts(h, t), tile_starts(w, t)
        mask = np.empty((h, w), dtype=np.uint8)
        below = torch.zeros((n_cls, ov, w), device=self.device)  # the overlap strip the row above left
        for r, y0 in enumerate(ys):
            th = min(t, h - y0)
            top, bottom = r > 0, r < len(ys) - 1
            wy = tile_weights(th, ov, top, bottom, self.device)
            next_below = torch.zeros_like(below) if bottom else below
            right = None  # (C, th, ov): the strip the tile to the left left
            for start in range(0, len(xs), tiles_per_pass):
                chunk = xs[start : start + tiles_per_pass]
                crops = [image[y0 : y0 + th, x0 : x0 + min(t, w - x0)] for x0 in chunk]
                by_width: dict[int, list[int]] = defaultdict(list)  # the last column of tiles may be narrower
                for j, crop in enumerate(crops):
                    by_width[crop.shape[1]].append(j)
                logits: list[torch.Tensor | None] = [None] * len(chunk)
                for js in by_width.values():
                    out = self._forward(self._to_tensor([crops[j] for j in js]))  # (n, C, th, tw)
                    for j, o in zip(js, out, strict=True):
                        logits[j] = o
                for j, x0 in enumerate(chunk):
                    c = start + j
                    left, more = c > 0, c < len(xs) - 1
                    o = logits[j]
                    tw = o.shape[-1]
                    o = o * wy[:, None] * tile_weights(tw, ov, left, more, self.device)[None, :]
                    if left:
                        o[:, :, :ov] += right
                    if top:
                        lo = ov if left else 0  # the corner came with the left strip
                        o[:, :ov, lo:] += below[:, :, x0 + lo : x0 + tw]
                    fh, fw = th - (ov if bottom else 0), tw - (ov if more else 0)  # what no later tile covers
                    mask[y0 : y0 + fh, x0 : x0 + fw] = o[:, :fh, :fw].argmax(0).to(torch.uint8).cpu().numpy()
                    if more:
                        right = o[:, :, fw:]
                    if bottom:
                        next_below[:, :, x0 : x0 + fw] = o[:, fh:, :fw]
            below = next_below
        return mask

    # ---------------------------------------------------------------- public
    @checked
    @torch.inference_mode()
    def predict(self, images: list[np.ndarray], scale: PositiveFloat = 1.0, batch_size: PositiveInt = 16
                ) -> list[np.ndarray]:
        """Segment RGB uint8 images (H, W, 3); returns (H, W) uint8 group-id masks at each input's size.

        An image larger than ``tile`` px (after scaling) is segmented by sliding windows with the overlaps blended, in
        memory that does not grow with its height (:meth:`_segment_large`): a 12000x9000 photo needs its own pixels,
        its mask and about 1 GB more on a CPU (one 1024 px tile at a time).

        Args:
            images: RGB uint8 arrays, any sizes.
            scale: ground-resolution factor applied before the network (aspect kept): 1.0 for images at the model's
                training resolution (the caption set), ``self.drone_scale`` for the drone set's own photos.
            batch_size: images per forward pass (images of the same size are batched together).
        """
        out: list[np.ndarray | None] = [None] * len(images)
        for (h, w), idx in _by_size(images).items():
            sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            if max(sh, sw) > self.tile:  # one at a time, in bounded memory
                for i in idx:
                    im = np.asarray(images[i])
                    scaled = im if (sh, sw) == (h, w) else cv2.resize(im, (sw, sh), interpolation=interp)
                    # several tiles per pass pay on a GPU; on a CPU they only multiply the activations' memory
                    per_pass = max(1, min(batch_size, 4)) if self.device.type == "cuda" else 1
                    p = self._segment_large(scaled, tiles_per_pass=per_pass)
                    del scaled
                    out[i] = p if (sh, sw) == (h, w) else cv2.resize(p, (w, h), interpolation=cv2.INTER_NEAREST)
                continue
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                batch = [np.asarray(images[i]) for i in chunk]
                if (sh, sw) != (h, w):
                    batch = [cv2.resize(b, (sw, sh), interpolation=interp) for b in batch]
                pred = self.logits(self._to_tensor(batch)).argmax(1).to(torch.uint8).cpu().numpy()
                for i, p in zip(chunk, pred, strict=True):
                    if (sh, sw) != (h, w):
                        p = cv2.resize(p, (w, h), interpolation=cv2.INTER_NEAREST)
                    out[i] = np.ascontiguousarray(p)
        return out  # type: ignore[return-value]

    @checked
    @torch.inference_mode()
    def encoder_pools(self, images: list[np.ndarray], scale: PositiveFloat = 1.0, batch_size: PositiveInt = 16,
                      encoder: torch.nn.Module | None = None, views: int = 1) -> dict[str, np.ndarray]:
        """What a scene head reads of each image: every encoder stage averaged over the image, and its colours.

        Returns ``{"s2": (N, C2), "s4": ..., "s32": (N, C32), "colour": (N, 6)}``: ``sK`` is the encoder's output
        at stride K (mobilenet_v2: 16, 24, 32, 96 and 1280 channels) averaged over the cells that cover the image
        (the padding to 32 left out); ``colour`` the mean then the standard deviation of the R, G and B values (0-1).
        Images are scaled by ``scale`` as in :meth:`predict` (the decoder does not run); one larger than ``tile`` px
        after that is shrunk to fit it, aspect kept: a scene is judged on the whole image. ``encoder``: another
        encoder of the same architecture in place of the network's (a scene head's own, :class:`SceneHead`).
        ``views`` > 1: the mean over the image's first ``views`` :func:`dihedral` views (4: its rotations, 8: those and
        their mirror images), what a scene head fitted with as many views reads; each view costs one encoder pass.
        """
        if views > 1:
            each = [self.encoder_pools([dihedral(im, k) for im in images], scale, batch_size, encoder)
                    for k in range(views)]
            return {key: np.mean([e[key] for e in each], axis=0).astype(np.float32) for key in each[0]}
        if encoder is None:
            encoder = self.model.encoder
        else:  # on this device, in the layout the network has (no-ops after the first call)
            encoder.to(self.device).eval()
            if self.channels_last:
                encoder.to(memory_format=torch.channels_last)
        rows: list[dict[str, np.ndarray] | None] = [None] * len(images)
        for (h, w), idx in _by_size(images).items():
            sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
            if max(sh, sw) > self.tile:
                fit = self.tile / max(sh, sw)
                sh, sw = max(1, round(sh * fit)), max(1, round(sw * fit))
            interp = cv2.INTER_AREA if sh < h else cv2.INTER_LINEAR
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                batch = [np.asarray(images[i]) for i in chunk]
                if (sh, sw) != (h, w):
                    batch = [cv2.resize(b, (sw, sh), interpolation=interp) for b in batch]
                xp, _, _ = pad_to_multiple(self._to_tensor(batch))
                if self.channels_last:
                    xp = xp.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", enabled=self.device.type == "cuda"):
                    stages = encoder(xp)  # [input, stride 2, 4, 8, 16, 32]
                pooled = {}
                for k, f in enumerate(stages[1:], start=1):
                    stride = 2**k
                    cells = f[..., : math.ceil(sh / stride), : math.ceil(sw / stride)]  # (n, C, h/stride, w/stride)
                    pooled[f"s{stride}"] = cells.float().mean((2, 3)).cpu().numpy()
                pix = np.stack(batch).reshape(len(batch), -1, 3).astype(np.float32) / 255  # (n, H*W, 3)
                pooled["colour"] = np.concatenate([pix.mean(1), pix.std(1)], axis=1)
                for j, i in enumerate(chunk):
                    rows[i] = {k: v[j] for k, v in pooled.items()}
        keys = list(rows[0]) if rows else []
        return {k: np.stack([r[k] for r in rows]).astype(np.float32) for k in keys}  # type: ignore[index]

    def scenes(self, images: list[np.ndarray], scale: float = 1.0, batch_size: int = 16, top: int = SCENE_TOP
               ) -> list[list[dict]] | None:
        """Each image's ``top`` most probable scenes by the scene head, most probable first:
        ``[[{"name": "airplane", "probability": 0.931}, ...], ...]`` (3 decimals); None when there is no head."""
        if self.scene_head is None:
            return None
        if not images:
            return []
        pools = self.encoder_pools(images, scale=scale, batch_size=batch_size, encoder=self.scene_head.encoder,
                                   views=int(self.scene_head.features.get("views", 1)))
        return self.scene_head.top(scene_features(pools, self.scene_head.features), top)


def tile_overlap(tile: int) -> int:
    """Pixels shared by neighbouring tiles: 1/8 of the tile."""
    return max(1, tile // 8)


def tile_starts(size: int, tile: int) -> list[int]:
    """Where the tiles along one side start: every ``tile - overlap`` px until one reaches the end (the last ones are
    cropped to the image, never shifted back), so that neighbours always share exactly the overlap."""
    step = tile - tile_overlap(tile)
    starts = [0]
    while starts[-1] + tile < size:
        starts.append(starts[-1] + step)
    return starts


def tile_weights(n: int, overlap: int, before: bool, after: bool, device) -> torch.Tensor:
    """(n,) blend weights of one tile along one side: a linear ramp up across the overlap with the tile ``before``
    and down across the overlap with the tile ``after``, 1 elsewhere; two neighbours' ramps sum to 1."""
    w = torch.ones(n, device=device)
    ramp = (torch.arange(overlap, device=device, dtype=torch.float32) + 0.5) / overlap
    if before:
        w[:overlap] = ramp[: min(overlap, n)]
    if after:
        w[n - overlap :] = w[n - overlap :] * ramp.flip(0)
    return w


def read_checkpoint_config(folder: str | Path) -> dict:
    folder = Path(folder)
    cfg_path = folder / "config.yaml"
    if not folder.is_dir():
        raise CheckpointNotFoundError(
            f"segmentation checkpoint not found: {folder} is not a folder; train one with "
            "`python -m segmentation.train --config configs/segmentation.yaml --out runs/segmentation`"
        )
    for f in (cfg_path, folder / "model.pt"):
        if not f.is_file():
            raise CheckpointNotFoundError(
                f"segmentation checkpoint {folder} lacks {f.name}; a checkpoint folder holds model.pt, config.yaml "
                "and metrics.json (written by python -m segmentation.train)"
            )
    try:
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{cfg_path}: not valid YAML ({one_line(e)})") from e
    if not isinstance(cfg, dict) or cfg.get("format") != CONFIG_FORMAT or "classes" not in cfg:
        raise ConfigError(f"{cfg_path}: not a segcap segmentation config (expected format: {CONFIG_FORMAT})")
    return cfg


def scene_head_folder(folder: str | Path, scene_head: str | Path | None = "auto") -> Path | None:
    """Where the scene head of checkpoint ``folder`` is: ``auto``, the folder itself when it holds scene_head.pt (else
    none); ``none`` or None, none; else the folder ``scene_head`` names."""
    if scene_head is None or str(scene_head).lower() in ("none", "null", ""):
        return None
    if str(scene_head) == "auto":
        return Path(folder) if (Path(folder) / SCENE_HEAD_FILES[0]).is_file() else None
    return Path(scene_head)


def load_segmenter(folder: str | Path, device: str = "auto", scene_head: str | Path | None = "auto") -> Segmenter:
    """Load a checkpoint folder (model.pt + config.yaml) as a :class:`Segmenter`; needs nothing but the folder.

    ``scene_head``: ``auto`` loads the scene head the checkpoint folder holds, if any (one fitted on another
    model.pt is left out, with a note on stderr); a folder loads that one (a :class:`ConfigError` when it does not
    fit); ``none`` or None loads none.
    """
    folder = Path(folder)
    cfg = read_checkpoint_config(folder)
    table = class_table_from_dict(cfg["classes"], where=folder / "config.yaml")
    model = build_model(cfg.get("architecture", {}), table.num_classes)
    weights = folder / "model.pt"
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError, KeyError, pickle.UnpicklingError) as e:
        raise ConfigError(f"{weights}: not a readable weights file ({weights_file_problem(e, _size(weights))}); copy "
                          "the checkpoint folder again, or retrain it with python -m segmentation.train") from e
    if not isinstance(state, dict):
        raise ConfigError(f"{weights}: holds a {type(state).__name__}, not a state dict; a segcap checkpoint's "
                          "model.pt is the network's state_dict (python -m segmentation.train writes it)")
    try:
        model.load_state_dict(state)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"{weights}: does not fit the architecture in config.yaml ({one_line(e, 200)}); keep the "
                          "model.pt and config.yaml of one training run together") from e
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Segmenter(model, table, cfg, device=device, scene_head=find_scene_head(folder, scene_head))


def find_scene_head(folder: str | Path, scene_head: str | Path | None = "auto") -> SceneHead | None:
    """The scene head for checkpoint ``folder`` as :func:`load_segmenter` takes it (``auto``, a folder, or none)."""
    head_dir = scene_head_folder(folder, scene_head)
    if head_dir is None:
        return None
    try:
        return read_scene_head(head_dir, checkpoint=folder)
    except ConfigError as e:
        if str(scene_head) != "auto":
            raise
        print(f"note: scene head left out: {e}", file=sys.stderr, flush=True)
        return None

