"""The whole chain on a tiny config: synthetic data -> segmentation -> compositions -> LLMs -> scores -> report.

Slow (a few minutes on 2 cores): ``pytest -m slow tests/test_pipeline_e2e.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_config(tmp: Path) -> Path:
    seg = tmp / "seg.yaml"
    seg.write_text(yaml.safe_dump({"epochs": 1, "batch_size": 8, "crop_size": 64, "target_scale": 0.25,
                                   "decoder_channels": [32, 16, 16, 8, 8], "samples": 2}))
    llm_cfg = yaml.safe_load((REPO / "configs" / "llm" / "tiny.yaml").read_text())
    llm_cfg.update(epochs=1, tiny_model={**llm_cfg["tiny_model"], "hidden_size": 64, "intermediate_size": 128,
                                         "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 2})
    llm = tmp / "llm.yaml"
    llm.write_text(yaml.safe_dump(llm_cfg))
    cfg = {
        "run_dir": str(tmp / "run"), "data_root": str(tmp / "data"), "generate": True,
        "synthetic": {"seed": 1, "drone_images": 12, "caption_images": 48, "categories": ["pond", "river", "parking",
                                                                                           "forest"]},
        "classes": "aerial10", "segmentation_config": str(seg), "llm_config": str(llm),
        "composition_config": str(REPO / "configs" / "composition.yaml"), "num_beams": 2,
    }
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


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
              "predictions/nearest.json", "scores/scores.json", "scores/scores.md", "scores/scores.png",
              "report.md", "examples.png"):
        assert (run / f).exists(), f
    scores = json.loads((run / "scores" / "scores.json").read_text())
    assert {"pipeline", "oracle", "template", "nearest", "blind", "human"} <= set(scores["systems"])
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
    assert result[0]["composition"]["schema"] == "segcap.composition/1"

    # a second run finds every stage finished and does nothing
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and "=== stage" not in r.stdout
    # forcing one stage reruns it alone
    r = subprocess.run(cmd + ["--force", "report"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0 and r.stdout.count("=== stage") == 1
