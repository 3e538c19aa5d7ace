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

``predict`` keeps each image's aspect: it resizes by a ground-resolution factor ``scale`` (1.0 for images at the
resolution the model was trained for, such as the caption set; the checkpoint's ``input.drone_scale``, e.g. 0.25,
for photos of the drone set itself), pads to a multiple of 32, runs same-size images in batches, cuts large inputs
into overlapping tiles, and returns masks at the input size.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml

from aerialdata.classes import ClassTable, class_table_from_dict
from segcap.errors import ConfigError, SegcapError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PAD_MULTIPLE = 32  # the UNet halves the size five times
CONFIG_FORMAT = "segcap.segmentation/1"


class CheckpointNotFoundError(SegcapError, FileNotFoundError):
    """A segmentation checkpoint folder, or a file in it, is missing."""


def default_architecture() -> dict:
    return {"name": "Unet", "encoder_name": "mobilenet_v2", "decoder_channels": [128, 64, 32, 16, 16], "in_channels": 3}


def build_model(architecture: dict, num_classes: int, encoder_weights: str | Path | None = None) -> torch.nn.Module:
    """``smp.Unet`` from an architecture dict; ``encoder_weights`` is None or a local state-dict file (never a download).

    The weights file may hold the encoder's own state dict, a torchvision/timm ``mobilenet_v2`` state dict (its
    classifier is dropped), or a whole UNet's (``encoder.`` keys are used).
    """
    import segmentation_models_pytorch as smp

    arch = {**default_architecture(), **(architecture or {})}
    if arch["name"] != "Unet":
        raise ConfigError(f"architecture {arch['name']!r} is not supported; segcap trains smp.Unet")
    model = smp.Unet(
        encoder_name=arch["encoder_name"],
        encoder_weights=None,
        in_channels=int(arch["in_channels"]),
        classes=num_classes,
        decoder_channels=list(arch["decoder_channels"]),
    )
    if encoder_weights:
        load_encoder_weights(model, encoder_weights)
    return model


def load_encoder_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load a local encoder weights file into ``model.encoder``; clear error when it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"encoder weights file not found: {path}; pass a local .pth state dict of the encoder "
            "(e.g. torchvision's mobilenet_v2), or leave --encoder-weights empty to start from random weights"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is a user error here
        raise ConfigError(f"{path}: not a readable torch state dict ({e.__class__.__name__}: {e})") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
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


class Segmenter:
    """A trained UNet with its class table: RGB uint8 images in, group-id masks out.

    Args:
        model: the network (eval mode is set here).
        table: the class table whose ids the network predicts.
        config: the checkpoint's config dict (normalisation and input scale are read from it).
        device: torch device for inference.
    """

    def __init__(self, model: torch.nn.Module, table: ClassTable, config: dict | None = None, device: str = "cpu"):
        self.config = config or {}
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

    @torch.inference_mode()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised -> (N, C, H, W) logits, any H, W (padded to 32, tiled when large)."""
        h, w = x.shape[-2:]
        if max(h, w) > self.tile:
            return self._tiled(x)
        xp, h, w = pad_to_multiple(x)
        if self.channels_last:
            xp = xp.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", enabled=self.device.type == "cuda"):
            out = self.model(xp)
        return out[..., :h, :w].float()

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        """Sliding windows of ``tile`` px with 1/8 overlap; overlapping logits are averaged."""
        n, _, h, w = x.shape
        t = self.tile
        step = t - t // 8
        out = torch.zeros((n, self.table.num_classes, h, w), device=x.device)
        count = torch.zeros((1, 1, h, w), device=x.device)
        ys = list(range(0, max(h - t, 0) + 1, step)) or [0]
        xs = list(range(0, max(w - t, 0) + 1, step)) or [0]
        if ys[-1] + t < h:
            ys.append(h - t)
        if xs[-1] + t < w:
            xs.append(w - t)
        for y0 in ys:
            for x0 in xs:
                win = x[..., y0 : y0 + t, x0 : x0 + t]
                xp, th, tw = pad_to_multiple(win)
                if self.channels_last:
                    xp = xp.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", enabled=self.device.type == "cuda"):
                    o = self.model(xp)[..., :th, :tw].float()
                out[..., y0 : y0 + th, x0 : x0 + tw] += o
                count[..., y0 : y0 + th, x0 : x0 + tw] += 1
        return out / count

    # ---------------------------------------------------------------- public
    @torch.inference_mode()
    def predict(self, images: list[np.ndarray], scale: float = 1.0, batch_size: int = 16) -> list[np.ndarray]:
        """Segment RGB uint8 images (H, W, 3); returns (H, W) uint8 group-id masks at each input's size.

        Args:
            images: RGB uint8 arrays, any sizes.
            scale: ground-resolution factor applied before the network (aspect kept): 1.0 for images at the model's
                training resolution (the caption set), ``self.drone_scale`` for the drone set's own photos.
            batch_size: images per forward pass (images of the same size are batched together).
        """
        if scale <= 0:
            raise ConfigError(f"scale must be positive, got {scale}")
        out: list[np.ndarray | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, im in enumerate(images):
            im = np.asarray(im)
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ConfigError(f"image {i}: expected an (H, W, 3) uint8 RGB array, got {im.dtype} {im.shape}")
            by_size[im.shape[:2]].append(i)
        for (h, w), idx in by_size.items():
            sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                batch = [np.asarray(images[i]) for i in chunk]
                if (sh, sw) != (h, w):
                    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
                    batch = [cv2.resize(b, (sw, sh), interpolation=interp) for b in batch]
                pred = self.logits(self._to_tensor(batch)).argmax(1).to(torch.uint8).cpu().numpy()
                for i, p in zip(chunk, pred, strict=True):
                    if (sh, sw) != (h, w):
                        p = cv2.resize(p, (w, h), interpolation=cv2.INTER_NEAREST)
                    out[i] = np.ascontiguousarray(p)
        return out  # type: ignore[return-value]


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
        raise ConfigError(f"{cfg_path}: not valid YAML ({e})") from e
    if not isinstance(cfg, dict) or cfg.get("format") != CONFIG_FORMAT or "classes" not in cfg:
        raise ConfigError(f"{cfg_path}: not a segcap segmentation config (expected format: {CONFIG_FORMAT})")
    return cfg


def load_segmenter(folder: str | Path, device: str = "auto") -> Segmenter:
    """Load a checkpoint folder (model.pt + config.yaml) as a :class:`Segmenter`; needs nothing but the folder."""
    folder = Path(folder)
    cfg = read_checkpoint_config(folder)
    table = class_table_from_dict(cfg["classes"], where=folder / "config.yaml")
    model = build_model(cfg.get("architecture", {}), table.num_classes)
    try:
        state = torch.load(folder / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise ConfigError(f"{folder / 'model.pt'}: does not fit the architecture in config.yaml ({e})") from e
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Segmenter(model, table, cfg, device=device)

