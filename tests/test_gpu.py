"""CUDA checks of the GPU paths (each skips itself without CUDA): the LoRA / QLoRA training step and generation of
``bench.llm_qlora_gpu`` on a tiny Llama shape, through ``llm.model``'s loading path and the plain reference recipe;
``segmentation.train`` and ``segmentation.predict`` with ``--device cuda`` on the drone fixture."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench.llm_qlora_gpu as b
from bench.llm_qlora_gpu import build_checkpoint

REPO = Path(__file__).resolve().parents[1]
DRONE = REPO / "tests" / "data" / "drone"

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")

    folder = tmp_path_factory.mktemp("small-llama")
    info = build_checkpoint("small", folder)
    assert info["parameters"] > 0 and (folder / "config.json").is_file()
    return folder


@pytest.mark.parametrize("quantize, recipe", [("nf4", "segcap"), ("int8", "segcap"), ("none", "segcap"),
                                              ("nf4", "reference")])
def test_lora_steps_and_generation_on_cuda(checkpoint, quantize, recipe):
    if quantize != "none":
        pytest.importorskip("bitsandbytes")

    model, info = b.load_for_training(checkpoint, quantize, recipe)
    assert info["device"].startswith("cuda")
    if quantize != "none":
        import bitsandbytes as bnb

        kind = bnb.nn.Linear4bit if quantize == "nf4" else bnb.nn.Linear8bitLt
        layers = [m for m in model.modules() if isinstance(m, kind)]
        assert len(layers) == 2 * len(b.TARGETS)  # every projection of both blocks is quantized
        assert all(p.device.type == "cuda" for m in layers for p in m.parameters())
        if quantize == "nf4":
            assert all(m.compute_dtype == torch.bfloat16 for m in layers)  # QLoRA: bf16 compute on CUDA
    else:
        assert all(p.dtype == torch.bfloat16 for n, p in model.named_parameters() if "lora_" not in n)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert before and all("lora_" in n for n in before)
    assert all(p.device.type == "cuda" for p in before.values())

    r = b.train_speed(model, batch_size=4, seq_len=32, steps=2, warmup=1)
    assert r["finite_loss"] and r["tokens_per_s"] > 0
    assert 0 < r["peak_memory_allocated_gib"] < 2
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(before[n], p)]
    assert sorted(changed) == sorted(before)  # every LoRA A and B moved

    model = b.for_generation(model, quantize)
    for beams in (1, 3):
        g = b.generation_speed(model, batch_size=4, prompt_len=12, new_tokens=5, num_beams=beams, repeats=1)
        assert g["new_tokens"] == 5 and g["captions_per_s"] > 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_segmentation_train_and_predict_on_cuda(tmp_path):
    """`--device cuda` on one GPU (an H200 run found `torch.cuda.set_device("cuda")` raising: it needs an index)."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    ckpt, masks = tmp_path / "seg", tmp_path / "masks"
    r = _cli("segmentation.train", "--data-root", str(DRONE), "--out", str(ckpt), "--crop-size", "32",
             "--target-scale", "0.5", "--batch-size", "2", "--epochs", "1", "--max-steps", "2", "--samples", "1",
             "--device", "cuda", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((ckpt / "metrics.json").read_text())["train"]["device"].startswith("cuda")
    r = _cli("segmentation.predict", "--checkpoint", str(ckpt), "--images", str(DRONE / "original_images"),
             "--out", str(masks), "--scale", "0.5", "--device", "cuda", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list(masks.glob("*.png"))) == len(list((DRONE / "original_images").glob("*.jpg")))
