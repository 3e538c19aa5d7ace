"""Load any captioner: a folder written by ``captioners.train``, or a BLIP / VisionEncoderDecoder checkpoint as it is
(zero-shot).

    from captioners.model import load_captioner
    from aerialdata.images import read_rgb

    cap = load_captioner("runs/captioners/cnn-lstm", device="auto")
    cap.arch                                         # "cnn-lstm"
    cap.caption([read_rgb("pond_1.jpg")])            # ["a pond is surrounded by green trees"]
    cap.caption(images, num_beams=3, batch_size=32)  # beam search

    load_captioner("/models/blip-image-captioning-base")        # zero-shot BLIP from a local checkpoint folder
    load_captioner("Salesforce/blip-image-captioning-base")     # or a hub id (cache first; offline: one message)
"""

from __future__ import annotations

from pathlib import Path

from captioners.base import CONFIG_FILE, Captioner, read_config, resolve_device
from captioners.hf import checkpoint_type, hub_checkpoint_type, is_hub_id
from captioners.registry import ARCHS, MODEL_TYPES, arch_entry
from segcap.errors import ConfigError

__all__ = ["load_captioner", "model_arch", "Captioner", "ARCHS"]


def model_arch(model: str | Path) -> str:
    """The architecture of a captioner folder (its captioner.yaml) or of a checkpoint (its config.json), or a
    ConfigError saying why ``model`` is no captioner."""
    name = str(model)
    folder = Path(name).expanduser()
    if (folder / CONFIG_FILE).is_file():
        return read_config(folder)["arch"]
    if folder.is_dir() or is_hub_id(name):
        found = hub_checkpoint_type(name) if is_hub_id(name) else checkpoint_type(name)
        if found in MODEL_TYPES:
            return MODEL_TYPES[found]
        what = f"holds a {found!r} model (config.json)" if found else "holds no captioner.yaml and no config.json"
        raise ConfigError(
            f"{name} is not a captioner: it {what}; pass a folder written by captioners.train, or a BLIP or "
            "VisionEncoderDecoder checkpoint (e.g. Salesforce/blip-image-captioning-base)"
        )
    raise ConfigError(f"model {name} not found; pass a folder written by captioners.train or a checkpoint folder")


def load_captioner(folder: str | Path, device: str = "auto", arch: str | None = None) -> Captioner:
    """The captioner in ``folder`` (a captioners.train folder, or a BLIP / VisionEncoderDecoder checkpoint folder or
    hub id), on ``device`` (``auto``: CUDA when there is one). With ``arch``, a model of another architecture is a
    ConfigError."""
    if arch is not None:
        arch_entry(arch)
    dev = resolve_device(device)
    name = str(folder)
    found = model_arch(name)
    if arch is not None and found != arch:
        raise ConfigError(f"{name} holds a {found} captioner, not {arch}; pass a {arch} model or --arch {found}")
    path = Path(name).expanduser()
    if (path / CONFIG_FILE).is_file():
        return ARCHS[found].load(path, dev, read_config(path)["options"])
    return ARCHS[found].load(name, dev)  # a pretrained checkpoint, zero-shot
