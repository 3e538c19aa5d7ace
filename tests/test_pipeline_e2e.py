"""The whole chain with the real stage code: synthetic data -> segmentation -> compositions -> LLMs -> scores -> report.

- ``test_real_stages_on_a_tiny_set`` (default run, well under a minute on 2 cores): every stage's real code, in this
  process, on 12 caption images of 64x64 and 4 drone images, a 1-epoch segmenter and a 1-layer LM.
- ``test_whole_chain_then_resume`` (slow, a few minutes: ``pytest -m slow tests/test_pipeline_e2e.py``): the command
  line on a bigger set, with every system, one-image captioning, and a rerun.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pipeline import run as prun
from pipeline.executor import names

STAGES = names()

REPO = Path(__file__).resolve().parents[1]


def llm_config(tmp: Path, **over) -> Path:
    """configs/llm/tiny.yaml, one epoch of a one-layer model."""
    cfg = yaml.safe_load((REPO / "configs" / "llm" / "tiny.yaml").read_text())
    cfg.update(epochs=1, tiny_model={**cfg["tiny_model"], "hidden_size": 64, "intermediate_size": 128,
                                     "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2},
               **over)
    path = tmp / "llm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def tiny_config(tmp: Path) -> Path:
    seg = tmp / "seg.yaml"
    seg.write_text(yaml.safe_dump({"epochs": 1, "batch_size": 8, "crop_size": 64, "target_scale": 0.25,
                                   "decoder_channels": [32, 16, 16, 8, 8], "samples": 2}))
    cfg = {
        "run_dir": str(tmp / "run"), "data_root": str(tmp / "data"), "generate": True,
        "synthetic": {"seed": 1, "drone_images": 12, "caption_images": 48, "categories": ["pond", "river", "parking",
                                                                                           "forest"]},
        "classes": "aerial10", "segmentation_config": str(seg), "llm_config": str(llm_config(tmp)),
        "composition_config": str(REPO / "configs" / "composition.yaml"), "num_beams": 2,
        "captioners": {"cnn_lstm": {"epochs": 2, "image_size": 64, "hidden_dim": 64, "min_count": 1}},
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture
def torch_threads():
    """The tiny stages run on one thread (faster for such small tensors); other tests keep torch's setting."""
    before = torch.get_num_threads()
    yield 1
    torch.set_num_threads(before)


def test_real_stages_on_a_tiny_set(tmp_path, torch_threads):
    seg = tmp_path / "seg.yaml"
    seg.write_text(yaml.safe_dump({"epochs": 1, "batch_size": 4, "crop_size": 32, "target_scale": 0.5,
                                   "decoder_channels": [16, 8, 8, 8, 8], "samples": 0, "cache_images": True,
                                   "threads": torch_threads}))
    run_dir = tmp_path / "run"
    cfg = dict(
        run_dir=run_dir, data_root=tmp_path / "data", generate=True,
        synthetic={"seed": 1, "drone_images": 4, "drone_size": [96, 64], "caption_images": 12, "caption_size": 64,
                   "categories": ["pond", "river", "forest"]},
        classes="aerial10", segmentation_config=seg,
        llm_config=llm_config(tmp_path, save_checkpoints=False, threads=torch_threads),
        llm={"tiny_model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256}},
        num_beams=1, systems=("pipeline", "pipeline_pool", "template", "nearest", "cnn_lstm"), split="val",
        progress=False, consensus=2, retrieval_k=2,
        captioners={"cnn_lstm": {"epochs": 1, "image_size": 32, "attention_grid": 4, "feature_dim": 16,
                                 "embed_dim": 16, "hidden_dim": 32, "attention_dim": 16, "min_count": 1,
                                 "batch_size": 4, "threads": torch_threads}},
    )
    rows = prun.main(**cfg)
    assert [r["status"] for r in rows] == ["ran"] * len(STAGES)

    # what each stage wrote
    assert len(list((run_dir / "masks").glob("*.png"))) == 12
    for f in ("segmentation/model.pt", "segmentation/config.yaml", "compositions/predicted.jsonl",
              "compositions/truth.jsonl", "llm/pipeline", "predictions/pipeline.json", "predictions/template.json",
              "predictions/nearest.json", "predictions/cnn_lstm.json", "captioners/cnn_lstm/captioner.yaml",
              "scores/scores.md", "examples.png", "llm/pipeline/retrieval.npz", "predictions/pipeline_pool.json"):
        assert (run_dir / f).exists(), f
    assert not (run_dir / "llm" / "oracle").exists() and not (run_dir / "llm" / "blind").exists()
    stamps = {s: json.loads((run_dir / "stages" / f"{s}.json").read_text()) for s in STAGES}
    assert isinstance(stamps["segmentation"]["result"]["best_val_miou"], float)
    assert stamps["oracle"]["result"] == {"status": "not asked for"}
    assert any(c.startswith("python -m segmentation.train --config") for c in stamps["segmentation"]["commands"])
    scores = json.loads((run_dir / "scores" / "scores.json").read_text())
    assert scores["metadata"]["split"] == "val"
    assert {"pipeline", "pipeline_pool", "template", "nearest", "cnn_lstm", "human"} <= set(scores["systems"])
    assert any("--consensus-pool 2" in c for c in stamps["captions"]["commands"])
    assert any(c.startswith("python -m captioners.train --config") for c in stamps["captioners"]["commands"])
    report = (run_dir / "report.md").read_text()
    assert "## Captions on the val split" in report and "test split" not in report
    assert "python -m llm.finetune" in report
    assert "## End-to-end captioners" in report and "- cnn_lstm: cnn-lstm, " in report

    # nothing changed: a rerun finds every stage's outputs as it left them and runs nothing
    assert [r["status"] for r in prun.main(**cfg)] == ["done before"] * len(STAGES)


@pytest.mark.slow
def test_whole_chain_then_resume(tmp_path):
    cfg = tiny_config(tmp_path)
    cmd = [sys.executable, "-m", "pipeline.run", "--config", str(cfg), "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "run"
    for f in ("segmentation/model.pt", "segmentation/config.yaml", "segmentation/metrics.json",
              "compositions/predicted.jsonl", "compositions/truth.jsonl", "llm/pipeline", "llm/oracle", "llm/blind",
              "predictions/pipeline.json", "predictions/pipeline_beam2.json", "predictions/template.json",
              "predictions/nearest.json", "predictions/cnn_lstm.json", "predictions/cnn_lstm_beam2.json",
              "scores/scores.json", "scores/scores.md", "scores/scores.png",
              "report.md", "examples.png"):
        assert (run / f).exists(), f
    scores = json.loads((run / "scores" / "scores.json").read_text())
    assert {"pipeline", "oracle", "template", "nearest", "blind", "cnn_lstm", "human"} <= set(scores["systems"])
    report = (run / "report.md").read_text()
    assert "## Captions on the test split" in report and "python -m llm.finetune" in report

    # one image in, one caption out, with the composition table and an overlay
    image = next((tmp_path / "data" / "rsicd" / "RSICD_images").glob("*.jpg"))
    r = subprocess.run([sys.executable, "-m", "pipeline.caption", str(image), "--segmentation",
                        str(run / "segmentation"), "--llm", str(run / "llm" / "pipeline"), "--explain",
                        "--overlay", str(tmp_path / "overlay.png"), "--json", str(tmp_path / "caption.json")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "prompt: " in r.stdout and (tmp_path / "overlay.png").stat().st_size > 0
    result = json.loads((tmp_path / "caption.json").read_text())
    assert result[0]["composition"]["schema"] == "segcap.composition/2"

    # a second run finds every stage finished and does nothing
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "=== stage" not in r.stdout
    # forcing the report reruns it alone (nothing reads it); forcing the masks reruns everything after them
    r = subprocess.run(cmd + ["--force", "report"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.count("=== stage") == 1
    r = subprocess.run(cmd + ["--force", "masks"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr[-2000:]
    # (the end-to-end captioners read no masks: their stage is not among them)
    assert r.stdout.count("=== stage") == len(STAGES) - STAGES.index("masks") - 1
