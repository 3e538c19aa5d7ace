"""The whole chain on real files (slow): ``configs/pipeline/rsicd.yaml`` with only its paths changed trains a segmenter
on the LoveDA sample tiles (and the drone fixture), captions the real RSICD samples with a QLoRA-tuned LM and scores
them; its segmenter and LM then caption the real UCM samples, which are scored against UCM's references.
``configs/pipeline/ucm.yaml``, with its paths on the samples and CI-sized epochs, runs to the report on the 9 UCM
photos (one class: without the scene head, which refuses them).

The real samples live in ``../shared/real-samples`` (see its SOURCES.md): the test skips cleanly where that folder is
absent (a clean clone). Nothing is fetched: the ImageNet encoder weights the config names come from a Hugging Face
cache made here (a random encoder standing in), and the base model is a tiny Llama saved to a local folder. The
end-to-end CNN+LSTM starts from random weights (torchvision's cannot be cached offline): the one change besides paths.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaForCausalLM

from aerialdata.captionset import CaptionDataset
from llm.model import tiny_config
from llm.tokenizer import train_tokenizer
from tests.hub_cache import cache_imagenet

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SAMPLES = REPO.parent / "shared" / "real-samples"
RSICD, UCM, LOVEDA = SAMPLES / "rsicd", SAMPLES / "ucm", SAMPLES / "loveda"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not SAMPLES.is_dir(), reason="needs ../shared/real-samples (not in a clean clone)")]


def _tiny_base_model(folder: Path) -> Path:
    """A tiny Llama with a byte-level BPE tokenizer, saved as a local checkpoint folder (widths multiples of 32, so
    nf4 quantisation also runs on CPU)."""
    texts = [s for root, name in ((RSICD, "dataset_rsicd.json"), (UCM, "dataset_ucm.json"))
             for it in CaptionDataset(root, json_name=name) for s in it.sentences]
    tok = train_tokenizer(texts, kind="bpe", vocab_size=512)
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config({"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1,
                                          "num_attention_heads": 2, "num_key_value_heads": 2,
                                          "max_position_embeddings": 512}, tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _run(args: list[str], env: dict, cwd: Path = REPO, code: int = 0) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=1500)
    assert r.returncode == code, r.stderr[-3000:]
    return r


def test_rsicd_config_with_only_paths_changed_runs_on_real_samples(tmp_path):
    # 1. what a user does: copy the config and change its paths (and nothing else)
    base = _tiny_base_model(tmp_path / "tiny-llama")
    text = (REPO / "configs" / "pipeline" / "rsicd.yaml").read_text()
    for old, new in (("runs/rsicd", tmp_path / "run"), ("/data/RSICD", RSICD), ("/data/LoveDA", LOVEDA),
                     ("/data/semantic_drone_dataset", HERE / "data" / "drone"), ("/models/Llama-2-7b-hf", base),
                     ("data_root: /data ", f"data_root: {tmp_path / 'data'} "),
                     ("configs/", f"{REPO / 'configs'}/")):
        assert old in text, old
        text = text.replace(old, str(new))
    # one change beyond paths: torchvision's ResNet-50 weights for the CNN+LSTM cannot be put in an offline cache (their
    # file name carries a hash of their bytes), so the captioner starts from random weights here
    captioner = f"cnn_lstm: {{config: {REPO / 'configs'}/captioners/rsicd.yaml}}"
    assert captioner in text
    text = text.replace(captioner, captioner[:-1] + ", encoder_weights: null}")
    config = tmp_path / "rsicd.yaml"
    config.write_text(text)
    # ImageNet weights from a Hugging Face cache (the config asks for them), offline as the Makefile runs
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    cache_imagenet(cache)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}

    # 2. the chain: LoveDA-trained segmenter -> masks of the RSICD tiles -> compositions -> QLoRA LM -> scores
    r = _run(["pipeline.run", "--config", str(config), "--no-progress"], env, cwd=tmp_path)
    run = tmp_path / "run"
    seg = run / "segmentation"
    trained_on = yaml.safe_load((seg / "config.yaml").read_text())["trained_on"]
    assert [(e["source"], e["synthetic"]) for e in trained_on] == [("loveda", False), ("drone", False)]
    assert trained_on[0]["gsd"] == 0.3
    masks = sorted((run / "masks").glob("*.png"))
    assert [m.stem for m in masks] == sorted(p.stem for p in (RSICD / "RSICD_images").glob("*.jpg"))
    records = [json.loads(line) for line in (run / "compositions" / "predicted.jsonl").read_text().splitlines()]
    assert len(records) == 5 and all(abs(sum(c["percent"] for c in rec["classes"]) - 100) < 0.05 for rec in records)
    scores = json.loads((run / "scores" / "scores.json").read_text())
    assert {"pipeline", "pipeline_beam3", "pipeline_mbr", "pipeline_pool", "template", "nearest", "nearest_consensus",
            "blind", "cnn_lstm", "human"} <= set(scores["overall"])
    assert all(0 <= v["CIDEr"] for v in scores["overall"].values())
    assert "note:" not in r.stderr  # a segmenter trained on real sources prints no synthetic-only notice
    adapter = json.loads((run / "llm" / "pipeline" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(base)

    # 3. the same models on UCM's real TIFFs (0.3 m per pixel: scale 0.6 to the 0.5 m they were trained for)
    ucm = CaptionDataset(UCM, json_name="dataset_ucm.json", images_dir="UCM_images", split="test")
    images = [ucm.image_path(it.filename) for it in ucm]
    out = tmp_path / "ucm.json"
    _run(["pipeline.caption", *map(str, images), "--segmentation", str(seg), "--llm", str(run / "llm" / "pipeline"),
          "--scale", "0.6", "--json", str(out)], env)
    results = json.loads(out.read_text())
    assert [Path(x["image"]).name for x in results] == [it.filename for it in ucm]
    preds = tmp_path / "ucm_preds.json"
    preds.write_text(json.dumps([{"image_id": Path(x["image"]).name, "caption": x["caption"] or "."} for x in results]))
    _run(["evaluation.score", "--predictions", str(preds), "--references", str(UCM / "dataset_ucm.json"),
          "--split", "test", "--out", str(tmp_path / "ucm_scores")], env)
    ucm_scores = json.loads((tmp_path / "ucm_scores" / "scores.json").read_text())
    assert 0 <= ucm_scores["overall"]["ucm_preds"]["CIDEr"]


def test_ucm_config_runs_on_real_samples_to_the_report(tmp_path):
    """configs/pipeline/ucm.yaml with its paths on the samples and CI-sized epochs: the 9 UCM photos are one class
    (agricultural), so the scene head refuses them (exit 2, after the segmentation); without it the rerun reuses the
    segmenter and writes every system's captions, the scores and the report, whose examples read UCM_images/."""
    config = yaml.safe_load((REPO / "configs" / "pipeline" / "ucm.yaml").read_text())
    changes = {
        "run_dir": tmp_path / "run", "captions_root": UCM, "data_root": tmp_path / "data",
        # CI size: a few optimizer steps, one epoch of each LM and of the CNN+LSTM
        "segmentation": {**config["segmentation"], "sources": [{**config["segmentation"]["sources"][0],
                                                                "root": str(LOVEDA)}],
                         "epochs": 1, "max_steps": 2, "batch_size": 4},
        "llm": {**(config.get("llm") or {}), "epochs": 1},
        "captioners": {"cnn_lstm": {**config["captioners"]["cnn_lstm"], "epochs": 1}},
        # config files named relative to the repository (the run's cwd is tmp_path)
        **{k: REPO / config[k] for k in ("segmentation_config", "composition_config", "llm_config")},
    }
    changes["captioners"]["cnn_lstm"]["config"] = str(REPO / config["captioners"]["cnn_lstm"]["config"])
    assert config["scene_head"] is True and config["segmentation"]["sources"][0]["kind"] == "loveda"
    config.update({k: str(v) if isinstance(v, Path) else v for k, v in changes.items()})
    path = tmp_path / "ucm.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1",
           "OMP_NUM_THREADS": "2", "PYTHONPATH": str(REPO)}
    command = ["pipeline.run", "--config", str(path), "--no-progress"]
    run = tmp_path / "run"

    # 1. as shipped (scene_head: true): one category is no scene classification; exit 2, one clear line, before
    #    the first stage
    r = _run(command, env, cwd=tmp_path, code=2)
    assert "scene head needs scene categories" in r.stderr, r.stderr[-3000:]
    assert not (run / "stages").exists()

    # 2. scene_head: false, the one change a user makes next: every stage runs
    config["scene_head"] = False
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    r = _run(command, env, cwd=tmp_path)
    assert not (run / "scenes").exists()
    expected = {f"{s}{config['num_beams']}" if s == "pipeline_beam" else s for s in config["systems"]}
    expected.add(f"cnn_lstm_beam{config['num_beams']}")
    assert {"class_oracle", "image_nearest", "pipeline_scene", "pipeline_composition"} <= expected
    written = json.loads((run / "predictions" / "systems.json").read_text())
    assert set(written) == expected
    test = [it.filename for it in CaptionDataset(UCM, json_name="dataset_ucm.json", images_dir="UCM_images",
                                                 split="test")]
    for name in expected:
        preds = json.loads((run / "predictions" / f"{name}.json").read_text())
        assert sorted(p["image_id"] for p in preds) == sorted(test), name
    scores = json.loads((run / "scores" / "scores.json").read_text())
    assert expected | {"human"} <= set(scores["overall"])
    assert all(v["CIDEr"] >= 0 for v in scores["overall"].values())
    report = (run / "report.md").read_text()
    # one category (agricultural): scores per category only from two on (evaluation.report), so no per-class table;
    # the report still points at scores.md and says why class_oracle is degenerate here
    assert scores["per_category"] == {} and "### CIDEr per class" not in report
    assert "Per-category scores, every metric: [scores/scores.md](scores/scores.md)" in report
    assert "class_oracle here: one category (agricultural)" in report
    assert "## Composition health" in report
    # the examples figure read the photos from UCM_images/ (not RSICD_images/)
    assert "![examples](examples.png)" in report
    assert (run / "examples.png").stat().st_size > 0
    assert json.loads((run / "stages" / "report.json").read_text())["result"]["report"] == str(run / "report.md")
