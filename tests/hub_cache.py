"""A Hugging Face cache laid out as huggingface_hub writes it, for tests that must never reach the network: smp's
ImageNet encoder files (a random encoder standing in for the real weights) where smp looks for them."""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from segmentation.model import build_model, imagenet_source

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the fake hub repository's one revision


def snapshot(cache: Path, repo_id: str, revision: str = COMMIT, ref: str | None = None) -> Path:
    """The snapshot folder of ``repo_id`` at ``revision`` in the cache layout huggingface_hub writes."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / revision
    snap.mkdir(parents=True)
    if ref:
        (repo / "refs").mkdir()
        (repo / "refs" / ref).write_text(revision)
    return snap


def encoder_state(seed: int = 7) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in build_model({}, 10).encoder.state_dict().items()}


def cache_imagenet(cache: Path) -> dict[str, torch.Tensor]:
    """Put smp's two ImageNet files (a random encoder standing in for the real weights) where smp looks for them."""
    repo, rev = imagenet_source()
    snap = snapshot(cache, repo, rev)
    state = encoder_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(snap / "model.safetensors"))
    (snap / "config.json").write_text(json.dumps({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}))
    return state
