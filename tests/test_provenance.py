"""Honest output on data the model never saw: the checkpoint provenance note of segmentation.predict and
pipeline.caption (synthetic only, unknown, real), on the tiny fixtures and a real RSICD tile (skipped without
../shared), and the line of pipeline.run's summary and report.md on degenerate compositions."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from aerialdata.classes import load_class_table
from aerialdata.sources import SYNTHETIC_MARKER
from composition.schema import write_jsonl
from llm.finetune import main as finetune
from pipeline import caption
from pipeline import run as prun
from pipeline.layout import Layout
from pipeline.report import write_report
from segcap.cli import run
from segmentation import predict
from segmentation.model import CONFIG_FORMAT, build_model, default_architecture
from segmentation.provenance import from_synthetic_set, provenance_notice, training_data
from tests.test_composition import degenerate_records, varied_records

TESTS = Path(__file__).resolve().parent
DRONE_IMAGES = TESTS / "data" / "drone" / "original_images"
LLM_DATA = TESTS / "data" / "llm"
RSICD_SAMPLES = TESTS.parents[1] / "shared" / "real-samples" / "rsicd" / "RSICD_images"

SYNTHETIC = [{"source": "drone", "root": "data/synthetic/drone", "gsd": 0.25, "synthetic": True, "images": 300}]
LOVEDA = {"source": "loveda", "root": "/data/LoveDA", "gsd": 0.3, "synthetic": False, "images": 2522}
TRAINED_ON = {"synthetic": SYNTHETIC, "unknown": None, "real": [LOVEDA], "mixed": SYNTHETIC + [LOVEDA]}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One tiny untrained UNet, saved as four checkpoints that differ only in what config.yaml says it saw."""
    root = tmp_path_factory.mktemp("ckpt")
    table = load_class_table("aerial10")
    arch = {**default_architecture(), "decoder_channels": [16, 8, 8, 8, 8]}
    torch.manual_seed(0)
    weights = root / "model.pt"
    torch.save(build_model(arch, table.num_classes).state_dict(), weights)
    out = {}
    for kind, trained_on in TRAINED_ON.items():
        folder = root / kind
        folder.mkdir()
        shutil.copy(weights, folder / "model.pt")
        cfg = {"format": CONFIG_FORMAT, "architecture": arch, "classes": table.to_dict(), "input": {"drone_scale": 0.25}}
        if trained_on is not None:
            cfg["trained_on"] = trained_on
        (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        out[kind] = folder
    return out


@pytest.fixture(scope="module")
def caption_lm(tmp_path_factory) -> Path:
    """A one-layer caption LM, one epoch on the LLM fixture (a few seconds): enough to write some caption."""
    out = tmp_path_factory.mktemp("llm") / "lm"
    finetune(out=out, compositions=LLM_DATA / "compositions.jsonl", captions=LLM_DATA / "rsicd" / "dataset_rsicd.json",
             tiny_model={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "num_key_value_heads": 2, "max_position_embeddings": 128},
             tokenizer={"kind": "word", "vocab_size": 200}, epochs=1, batch_size=8, max_length=128,
             save_checkpoints=False, progress=False, threads=1)
    return out


# ---------------------------------------------------------------- what config.yaml says
def test_training_data_from_trained_on():
    assert training_data({"trained_on": SYNTHETIC}) == "synthetic"
    assert training_data({"trained_on": SYNTHETIC + SYNTHETIC}) == "synthetic"
    assert training_data({"trained_on": [LOVEDA]}) == "real"
    assert training_data({"trained_on": SYNTHETIC + [LOVEDA]}) == "real"  # it has seen real photos
    for config in ({}, {"trained_on": []}, {"trained_on": None}, {"trained_on": "drone"},
                   {"trained_on": [{"source": "drone"}]}, {"trained_on": SYNTHETIC + [{"source": "folder"}]}):
        assert training_data(config) == "unknown", config
    note = provenance_notice("runs/demo/segmentation", {"trained_on": SYNTHETIC})
    assert note == ("note: runs/demo/segmentation was trained on synthetic scenes only (data/synthetic/drone); on real "
                    "photos its classes will be wrong: train on a labelled real source (README, Real data)")
    assert provenance_notice("x", {"trained_on": [LOVEDA]}) is None


# ---------------------------------------------------------------- segmentation.predict
@pytest.mark.parametrize("kind", ["synthetic", "unknown", "real", "mixed"])
def test_predict_says_once_what_the_checkpoint_saw(kind, checkpoints, tmp_path, capsys):
    summary = predict.main(checkpoint=checkpoints[kind], images=DRONE_IMAGES, out=tmp_path / "masks", batch_size=2,
                           workers=0, progress=False)
    assert summary["written"] == 6  # three batches, still one note
    err = capsys.readouterr().err
    if kind in ("real", "mixed"):
        assert "note:" not in err
        return
    assert err.count("note:") == 1 and err.index("note:") < err.index("masks written")
    assert f"note: {checkpoints[kind]} " in err and "README, Real data" in err
    if kind == "synthetic":
        assert "trained on synthetic scenes only (data/synthetic/drone); on real photos its classes will be wrong" in err
    else:
        assert "does not say what it was trained on (no trained_on in its config.yaml" in err


def test_no_note_when_the_images_are_synthetic_scenes_too(checkpoints, tmp_path, capsys):
    """The demo segmenting its own synthetic caption set: the images carry the generator's marker, nothing to warn."""
    root = tmp_path / "rsicd"
    images = root / "RSICD_images"
    images.mkdir(parents=True)
    for f in sorted(DRONE_IMAGES.glob("*.jpg"))[:2]:
        (images / f.name).write_bytes(f.read_bytes())
    (root / SYNTHETIC_MARKER).write_text("{}")
    predict.main(checkpoint=checkpoints["synthetic"], images=images, out=tmp_path / "masks", workers=0, progress=False)
    assert "note:" not in capsys.readouterr().err
    assert from_synthetic_set([images / "000.jpg"]) and not from_synthetic_set([DRONE_IMAGES / "000.jpg"])
    assert not from_synthetic_set([])


# ---------------------------------------------------------------- pipeline.caption
@pytest.mark.parametrize("kind", ["synthetic", "unknown", "real"])
def test_caption_says_once_what_the_segmenter_saw(kind, checkpoints, caption_lm, capsys):
    images = [DRONE_IMAGES / "000.jpg", DRONE_IMAGES / "001.jpg"]
    results = caption.main(images=images, segmentation=checkpoints[kind], llm=caption_lm)
    assert len(results) == 2
    out, err = capsys.readouterr()
    assert out.count("000.jpg: ") == 1 and out.count("001.jpg: ") == 1
    if kind == "real":
        assert "note:" not in err
    else:
        assert err.count("note:") == 1
        assert ("synthetic scenes only" if kind == "synthetic" else "does not say what it was trained on") in err


@pytest.mark.skipif(not RSICD_SAMPLES.is_dir(), reason="needs ../shared/real-samples (not in a clean clone)")
def test_caption_of_a_real_rsicd_tile_with_a_synthetic_segmenter(checkpoints, caption_lm, capsys):
    tile = RSICD_SAMPLES / "airport_17.jpg"
    results = run(caption.main, [str(tile), "--segmentation", str(checkpoints["synthetic"]), "--llm", str(caption_lm),
                                 "--explain"], positional=("images",))
    out, err = capsys.readouterr()
    assert f"{tile}: {results[0]['caption']}" in out and "prompt: " in out
    assert err.count("note:") == 1
    assert f"{checkpoints['synthetic']} was trained on synthetic scenes only" in err


# ---------------------------------------------------------------- pipeline.run: degenerate compositions
def test_summary_and_report_say_when_the_compositions_are_degenerate(tmp_path, checkpoints):
    layout = Layout(run_dir=tmp_path / "run", captions_root=tmp_path / "rsicd", drone_root=tmp_path / "drone",
                    checkpoint_given=checkpoints["synthetic"])
    write_jsonl(layout.predicted, degenerate_records())
    rows = [{"stage": "compositions", "status": "ran", "seconds": 1.0}]

    # without exact masks
    summary = prun.summary_table(rows, layout)
    warning = [line for line in summary.splitlines() if "degenerate" in line]
    assert warning == [
        "warning: the predicted compositions look degenerate: one class dominant: artificial surface covers >= 75% of "
        "the image in 100% of the images (flag from 67%); few class orders: 3.0 effective, 3 distinct, for 40 images "
        "(flag below 10 effective). No exact masks to compare. Captions from them can say little (report.md, "
        "Composition health)"]

    # beside the exact masks' figures
    write_jsonl(layout.truth, varied_records())
    summary = prun.summary_table(rows, layout)
    assert summary.count("degenerate") == 1 and ". Exact masks: no flags. Captions from them" in summary
    report = write_report(layout).read_text()
    assert report.count("**Warning: the predicted compositions look degenerate") == 1
    table = report.split("## Composition health", 1)[1].split("\n\n")[2].splitlines()
    assert table[0].startswith("| compositions of | images |") and table[0].endswith("| effective class orders | flags |")
    assert table[2].startswith("| predicted masks | 40 |") and "| one class dominant: artificial surface" in table[2]
    assert table[3].startswith("| exact masks | 40 |") and table[3].endswith("| no flags |")

    # healthy compositions: no line, and the run's figures say so
    write_jsonl(layout.predicted, varied_records())
    assert "degenerate" not in prun.summary_table(rows, layout)
    assert "Warning" not in write_report(layout).read_text()
