"""Training smoke runs (checkpoint folder, resume, caption-set mIoU, TensorBoard, several sources, provenance),
prediction CLI, shards, config, torchrun."""

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from aerialdata.images import read_mask, read_rgb
from aerialdata.sources import IGNORE, SYNTHETIC_MARKER, SourceSpec, open_source
from segcap.cli import parse, run
from segcap.errors import ConfigError, DatasetNotFoundError, OutputExistsError
from segmentation import predict, train
from segmentation.model import load_segmenter
from segmentation.provenance import training_data

TESTS = Path(__file__).parent
DRONE = TESTS / "data" / "drone"
LOVEDA = TESTS / "data" / "loveda"
REPO = TESTS.parent
TINY = dict(data_root=DRONE, crop_size=32, target_scale=0.5, batch_size=2, samples=1, progress=False, threads=1)


def _caption_set(root: Path) -> Path:
    """A tiny caption set in the real layout, with exact source-id masks, made from the drone fixture."""
    (root / "RSICD_images").mkdir(parents=True)
    (root / "label_images_semantic").mkdir()
    images = []
    for i in range(4):
        shutil.copy(DRONE / "original_images" / f"{i:03d}.jpg", root / "RSICD_images" / f"park_{i}.jpg")
        shutil.copy(DRONE / "label_images_semantic" / f"{i:03d}.png", root / "label_images_semantic" / f"park_{i}.png")
        images.append({"filename": f"park_{i}.jpg", "imgid": i, "split": "test" if i < 2 else "train",
                       "sentences": [{"raw": "a park with a road", "tokens": [], "imgid": i, "sentid": i}]})
    (root / "dataset_rsicd.json").write_text(json.dumps({"images": images, "dataset": "rsicd"}))
    return root


def test_two_step_smoke_run_writes_checkpoint_folder(tmp_path):
    out = tmp_path / "run"
    caps = _caption_set(tmp_path / "rsicd")
    metrics = train.main(**TINY, out=out, epochs=1, max_steps=2, eval_captions=caps, loss="ce+dice")
    for name in ("model.pt", "config.yaml", "metrics.json", "history.png", "confusion_val.png",
                 "confusion_captions.png", "samples_val.png", "samples_captions.png", "last/training.json",
                 "last/model.safetensors", "last/optimizer.bin", "last/scheduler.bin", "last/random_states_0.pkl"):
        assert (out / name).is_file(), name
    assert train.resumable(out) and not (out / "tensorboard").exists()
    m = json.loads((out / "metrics.json").read_text())
    assert m == json.loads(json.dumps(metrics))
    assert m["history"][0]["step"] == 2 and m["best_epoch"] == 1
    assert isinstance(m["best_val_miou"], float) and m["best_val_miou"] == m["val"]["miou"]
    assert set(m["val"]) >= {"pixel_accuracy", "miou", "per_class_iou", "confusion_matrix"}
    assert list(m["val"]["per_class_iou"])[4] == "vegetation"
    assert m["captions"]["split"] == "test" and m["captions"]["images"] == 2
    assert m["captions"]["pixels"] == 2 * 48 * 64
    assert "minutes" in m["history"][0]
    res = m["resolution"]
    assert res["val"]["where"] == "drone val split" and res["val"]["scale"] == 0.5
    assert set(res["val"]["block_share"]) == set(m["val"]["per_class_iou"])
    assert res["captions"]["scale"] == 1.0 and isinstance(res["val"]["below_resolution"], list)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["architecture"]["encoder_name"] == "mobilenet_v2"
    assert cfg["classes"]["name"] == "seed10" and cfg["input"]["drone_scale"] == 0.5
    assert len(cfg["normalisation"]["mean"]) == 3
    # the folder alone loads, and predicts masks at the input size
    seg = load_segmenter(out, device="cpu")
    images = [read_rgb(DRONE / "original_images" / "000.jpg"), np.zeros((37, 50, 3), np.uint8)]
    masks = seg.predict(images, scale=0.5)
    assert [m.shape for m in masks] == [(48, 64), (37, 50)]
    assert all(m.dtype == np.uint8 and m.max() < seg.table.num_classes for m in masks)
    # tiling path: a tile smaller than the image gives the same shape
    seg.tile = 32
    assert seg.predict([images[0]])[0].shape == (48, 64)


def test_two_sources_train_together_at_scales_from_their_gsd(tmp_path, capsys):
    """The drone fixture at 0.15 m/px and the LoveDA fixture (published 0.3 m/px, published val split) for a caption
    set at 0.3 m/px: scales 0.5 and 1.0, from a YAML config as a user writes it."""
    out = tmp_path / "run"
    config = tmp_path / "sources.yaml"
    config.write_text(yaml.safe_dump({
        "sources": [{"kind": "drone", "root": str(DRONE), "gsd": 0.15}, {"kind": "loveda", "root": str(LOVEDA)}],
        "caption_gsd": 0.3, "out": str(out), "crop_size": 32, "batch_size": 2, "epochs": 1, "max_steps": 2,
        "loss": "ce+dice", "samples": 2, "progress": False, "threads": 1,
    }))
    m = train.main(**parse(train.main, ["--config", str(config)]))
    log = capsys.readouterr().out
    assert "source drone" in log and "0.15 m/px -> scale 0.5 " in log and "0.3 m/px -> scale 1 " in log
    assert "val (published split)" in log and "5 train images x 1 crops, 1 val (by file)" in log
    epoch_line = next(line for line in log.splitlines() if line.startswith("epoch 1:"))
    assert "val mIoU" in epoch_line and "(drone 0." in epoch_line and ", loveda 0." in epoch_line
    # the scale of each source follows from its gsd; the val splits: LoveDA's published one, the drone set's by file
    sources = {s["label"]: s for s in m["train"]["sources"]}
    assert sources["drone"]["scale"] == pytest.approx(0.5) and sources["loveda"]["scale"] == pytest.approx(1.0)
    assert (sources["drone"]["images"], sources["drone"]["val_images"], sources["drone"]["val_split"]) == \
        (5, 1, "val_fraction")
    assert (sources["loveda"]["images"], sources["loveda"]["val_images"], sources["loveda"]["val_split"]) == \
        (3, 2, "published")
    assert m["train"]["caption_gsd"] == 0.3 and m["train"]["images"] == 8
    # val mIoU per source and overall; every labelled pixel counted once at the source's scale, IGNORE never
    loveda = open_source(SourceSpec("loveda", LOVEDA), "seed10")
    labelled = sum(int((loveda.load(i, 1.0)[1] != IGNORE).sum()) for i in range(len(loveda))
                   if loveda.splits[i] == "val")
    val = m["val_sources"]
    assert val["drone"]["pixels"] == 24 * 32 and val["loveda"]["pixels"] == labelled < 2 * 32 * 32
    assert m["val"]["pixels"] == 24 * 32 + labelled and m["best_val_miou"] == m["val"]["miou"]
    assert val["loveda"]["split"] == "published" and val["loveda"]["scale"] == pytest.approx(1.0)
    assert "vehicles" not in val["loveda"]["labelled_classes"] and val["loveda"]["per_class_iou"]["vehicles"] is None
    assert set(m["history"][0]["val_miou_by_source"]) == {"drone", "loveda"}
    assert set(m["resolution"]["val"]["sources"]) == {"drone", "loveda"}
    # provenance: what it was trained on, exactly as the interface says
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["trained_on"] == [
        {"source": "drone", "root": str(DRONE), "gsd": 0.15, "synthetic": False, "images": 5},
        {"source": "loveda", "root": str(LOVEDA), "gsd": 0.3, "synthetic": False, "images": 3},
    ]
    assert cfg["caption_gsd"] == 0.3 and training_data(cfg) == "real"
    assert cfg["input"]["source_scales"] == {"drone": pytest.approx(0.5), "loveda": pytest.approx(1.0)}
    assert cfg["training"]["sources"][1] == {"kind": "loveda", "root": str(LOVEDA), "gsd": None, "class_map": None}
    assert (out / "samples_val.png").is_file() and load_segmenter(out, device="cpu").table.name == "seed10"


def test_sources_config_errors_before_any_work(tmp_path, capsys):
    out = tmp_path / "never"
    drone = {"kind": "drone", "root": DRONE, "gsd": 0.15}
    cases = [
        (dict(sources=[drone], caption_gsd=1.0, data_root=DRONE), "sources and data_root are two forms"),
        (dict(sources=[drone], caption_gsd=1.0, target_scale=0.5), "sources and target_scale are two forms"),
        (dict(sources=[drone]), "sources need caption_gsd"),
        (dict(data_root=DRONE, caption_gsd=1.0), "caption_gsd 1.0 goes with sources"),
        (dict(sources=[], caption_gsd=1.0), "empty list"),
        (dict(sources=[drone, drone], caption_gsd=1.0), "listed twice"),
        (dict(sources=[{**drone, "gsd": -1}], caption_gsd=0),
         r"sources\[0\].gsd -1 is invalid; expected a number > 0 or null\n.*caption_gsd 0 is invalid"),
        # the drone fixture has no synthetic marker, so nothing states its ground resolution
        (dict(sources=[{"kind": "drone", "root": DRONE}], caption_gsd=1.0), "drone .* states no ground resolution"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError, match=message):
            train.main(out=out, progress=False, **kwargs)
    with pytest.raises(ConfigError) as e:  # every problem of the form at once
        train.main(out=out, sources=[drone], data_root=DRONE, target_scale=0.5, progress=False)
    assert "2 problems" in str(e.value) and "data_root and target_scale" in str(e.value)
    assert not out.exists()  # refused before any work
    # from a YAML config: exit code 2, one message naming the fix
    config = tmp_path / "mixed.yaml"
    config.write_text(yaml.safe_dump({"sources": [{"kind": "loveda", "root": str(LOVEDA)}], "caption_gsd": 0.5,
                                      "data_root": str(DRONE), "out": str(out)}))
    with pytest.raises(SystemExit) as e:
        run(train.main, ["--config", str(config)])
    assert e.value.code == 2 and "data_root: null" in capsys.readouterr().err
    assert not out.exists()
    # the same check for a caller that assembles the options itself (a pipeline stage), on a config's mappings
    assert train.form_problems([{"kind": "loveda", "root": str(LOVEDA)}], 0.5, None, None) == []
    (problem,) = train.form_problems([{"kind": "loveda", "root": str(LOVEDA)}], 0.5, Path("data/drone"), None)
    assert "two forms" in problem


def test_one_drone_set_records_its_provenance(checkpoint, tmp_path):
    # the fixture states no ground resolution: gsd null; the scale was set by hand: caption_gsd null
    cfg = yaml.safe_load((checkpoint / "config.yaml").read_text())
    assert cfg["trained_on"] == [{"source": "drone", "root": str(DRONE), "gsd": None, "synthetic": False, "images": 5}]
    assert cfg["caption_gsd"] is None and cfg["input"]["drone_scale"] == 0.5
    # a set written by synthetic.generate says so in its marker, with its ground resolution
    marked = tmp_path / "drone"
    shutil.copytree(DRONE, marked, ignore=shutil.ignore_patterns("data.py"))
    (marked / SYNTHETIC_MARKER).write_text(json.dumps({"generator": "segcap synthetic.generate", "seed": 0,
                                                       "gsd": 0.25}))
    out = tmp_path / "run"
    train.main(**{**TINY, "data_root": marked, "samples": 0, "limit": 4}, out=out, epochs=1, max_steps=1)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["trained_on"] == [{"source": "drone", "root": str(marked), "gsd": 0.25, "synthetic": True, "images": 3}]
    assert cfg["caption_gsd"] is None and training_data(cfg) == "synthetic"


def test_resume_continues_from_last_epoch(tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_evaluate = train.evaluate
    calls = {"n": 0}

    def interrupted(*a, **k):  # the second epoch's evaluation is interrupted
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_evaluate(*a, **k)

    monkeypatch.setattr(train, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train.main(**TINY, out=out, epochs=2)
    monkeypatch.setattr(train, "evaluate", real_evaluate)
    first = json.loads((out / "metrics.json").read_text())
    assert len(first["history"]) == 1 and train.resumable(out)

    with pytest.raises(OutputExistsError):
        train.main(**TINY, out=out, epochs=2)
    with pytest.raises(ConfigError, match="epochs"):
        train.main(**TINY, out=out, epochs=3, resume=True)
    m = train.main(**TINY, out=out, epochs=2, resume=True)
    assert [h["epoch"] for h in m["history"]] == [1, 2]
    assert m["history"][0] == first["history"][0]
    assert m["history"][1]["step"] == 2 * m["history"][0]["step"]
    assert m["history"][1]["minutes"] >= m["history"][0]["minutes"]
    # the restored state (weights, optimiser, schedule, RNG, data order, crops) continues exactly where it stopped
    whole = train.main(**TINY, out=tmp_path / "whole", epochs=2)
    for key in ("train_loss", "val_loss", "val_miou", "lr"):
        assert m["history"][1][key] == pytest.approx(whole["history"][1][key], rel=1e-4), key
    with pytest.raises(ConfigError, match="nothing to resume"):
        train.main(**TINY, out=tmp_path / "empty", epochs=2, resume=True)
    assert not train.resumable(tmp_path / "empty")


def test_eval_every_measures_every_nth_and_the_last_epoch(tmp_path):
    out = tmp_path / "run"
    m = train.main(**{**TINY, "samples": 0}, out=out, epochs=3, eval_every=2, cache_images=True)
    assert [h["epoch"] for h in m["history"]] == [1, 2, 3]
    assert [h.get("val_miou") is not None for h in m["history"]] == [False, True, True]
    assert m["best_epoch"] in (2, 3)  # the best weights come from a measured epoch
    assert (out / "history.png").is_file()
    with pytest.raises(ConfigError, match="eval_every 0 is invalid; expected an integer >= 1"):
        train.main(**TINY, out=tmp_path / "bad", eval_every=0)


def test_bad_options_reported_together(tmp_path):
    with pytest.raises(ConfigError) as e:
        train.main(data_root=DRONE, out=tmp_path / "x", crop_size=50, decoder_channels=(8, 8), resume=True,
                   overwrite=True)
    msg = str(e.value)
    assert "3 problems" in msg and "multiple of 32" in msg and "try 64" in msg and "5 positive numbers" in msg
    with pytest.raises(ConfigError) as e:  # bounds are the signature's: all of them at once, before the rules above
        train.main(data_root=DRONE, out=tmp_path / "x", crop_size=50, batch_size=0, target_scale=-1)
    assert e.value.problems == [
        "segmentation.train: target_scale -1 is invalid; expected a number > 0 or null (default: null)",
        "segmentation.train: batch_size 0 is invalid; expected an integer >= 1 (default: 8)"]
    assert not (tmp_path / "x").exists()


def test_config_parses_against_entry_point(tmp_path):
    kwargs = parse(train.main, ["--config", str(REPO / "configs" / "segmentation.yaml")])
    assert kwargs["target_scale"] < 1 and kwargs["crop_size"] % 32 == 0
    assert kwargs["data_root"] == Path("data/synthetic/drone") and kwargs["sources"] is None
    # every option passes the checks: the run stops only at the (here absent) data, before any work
    with pytest.raises(DatasetNotFoundError):
        train.main(**{**kwargs, "data_root": tmp_path / "no_drone", "out": tmp_path / "o", "progress": False})
    assert not (tmp_path / "o").exists()
    # ... and runs as it is, on the drone fixture, in the one-drone-set form
    out = tmp_path / "run"
    m = train.main(**{**kwargs, "data_root": DRONE, "out": out, "eval_captions": None, "crop_size": 32,
                      "batch_size": 2, "epochs": 1, "max_steps": 1, "samples": 0, "progress": False, "threads": 1})
    assert m["history"][0]["step"] == 1 and "val_sources" not in m
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["input"]["drone_scale"] == kwargs["target_scale"] and cfg["trained_on"][0]["source"] == "drone"


def test_cross_option_problems_are_config_errors(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as e:
        train.main(**TINY, out=tmp_path / "x", device="cpu", precision="fp16", resume=True, overwrite=True,
                   decoder_channels=(64, 32, 16))
    msg = str(e.value)
    assert "3 problems" in msg and "fp16 needs CUDA" in msg and "conflict" in msg and "5 positive" in msg
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard"
                        else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[tensorboard\]'"):
        train.main(**TINY, out=tmp_path / "tb", tensorboard=True)
    assert not (tmp_path / "tb").exists()  # refused before any work


def test_tensorboard_event_files(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    train.main(**{**TINY, "samples": 0}, out=out, epochs=2, tensorboard=True)
    events = list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/lr", "val/miou", "val/loss"} <= tags
    assert [e.step for e in acc.Scalars("val/miou")] == [1, 2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seg") / "ckpt"
    train.main(**{**TINY, "samples": 0}, out=out, epochs=1, max_steps=1)
    return out


def test_predict_skips_corrupt_image_and_resumes(checkpoint, tmp_path, capsys):
    images = tmp_path / "images"
    shutil.copytree(DRONE / "original_images", images)
    (images / "002.jpg").write_bytes(b"broken")
    out, ov = tmp_path / "masks", tmp_path / "overlays"
    s = predict.main(checkpoint=checkpoint, images=images, out=out, overlays=ov, batch_size=4, workers=0,
                     progress=False)
    assert s["written"] == 5 and len(s["failed"]) == 1 and "002.jpg" in s["failed"][0]["file"]
    assert "002.jpg" in capsys.readouterr().err
    assert sorted(p.name for p in out.glob("*.png")) == ["000.png", "001.png", "003.png", "004.png", "005.png"]
    mask = read_mask(out / "000.png")
    assert mask.shape == (48, 64) and mask.max() < 10
    assert (ov / "000.jpg").is_file()
    # a rerun skips what exists (resume) and never overwrites without --overwrite
    before = (out / "000.png").stat().st_mtime_ns
    s2 = predict.main(checkpoint=checkpoint, images=images, out=out, workers=0, progress=False)
    assert s2["written"] == 0 and s2["skipped_existing"] == 5
    assert (out / "000.png").stat().st_mtime_ns == before
    s3 = predict.main(checkpoint=checkpoint, images=images, out=out, workers=0, progress=False, overwrite=True)
    assert s3["written"] == 5
    # --strict stops with exit code 2 and one clear line
    with pytest.raises(SystemExit) as e:
        run(predict.main, ["--checkpoint", str(checkpoint), "--images", str(images), "--out", str(tmp_path / "m2"),
                           "--strict", "--workers", "0", "--no-progress"])
    assert e.value.code == 2
    assert "002.jpg" in capsys.readouterr().err


def test_predict_missing_checkpoint(tmp_path, capsys):
    (tmp_path / "im").mkdir()
    with pytest.raises(SystemExit) as e:
        run(predict.main, ["--checkpoint", str(tmp_path / "none"), "--images", str(tmp_path / "im"),
                           "--out", str(tmp_path / "o")])
    assert e.value.code == 2 and "segmentation.train" in capsys.readouterr().err


def test_shards_are_disjoint_and_cover(tmp_path):
    files = [tmp_path / f"{i:02d}.jpg" for i in range(10)]
    shards = [predict.shard_files(files[::-1], f"{i}/3") for i in range(3)]
    assert sorted(f for s in shards for f in s) == files
    assert [len(s) for s in shards] == [4, 3, 3]
    with pytest.raises(ConfigError):
        predict.parse_shard("3/3")
    with pytest.raises(ConfigError):
        predict.parse_shard("two")


def test_predict_shard_cli(checkpoint, tmp_path):
    out = tmp_path / "m"
    predict.main(checkpoint=checkpoint, images=DRONE / "original_images", out=out, shard="1/2", workers=0,
                 progress=False)
    assert sorted(p.name for p in out.glob("*.png")) == ["001.png", "003.png", "005.png"]


def _free_port() -> int:

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two torch processes (15 s): make test-slow; the default run stays well under 10 minutes
def test_torchrun_two_processes_gloo(tmp_path):
    """Runs unchanged under torchrun: 2 CPU processes on gloo (about 20 s on 2 cores)."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           "-m", "segmentation.train", "--data-root", str(DRONE), "--out", str(out), "--crop-size", "32",
           "--target-scale", "0.5", "--batch-size", "2", "--epochs", "2", "--samples", "1", "--no-progress",
           "--device", "cpu"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["train"]["world_size"] == 2 and len(m["history"]) == 2
    # 5 training images, 2 per batch, 2 processes: ceil(5/2)=3 samples each -> 1 full batch per process per epoch
    assert m["history"][-1]["step"] == 2
    assert m["val"]["pixels"] == 48 * 64 // 4  # the one val image, at scale 0.5, counted once across processes
    assert isinstance(m["best_val_miou"], float)
    assert (out / "model.pt").is_file() and train.resumable(out)
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (out / "last").iterdir()}


def test_freeze_encoder_trains_the_decoder_only(tmp_path):
    import torch
    import torchvision

    weights = tmp_path / "encoder.pth"
    torch.manual_seed(1)
    torch.save({k: v for k, v in torchvision.models.mobilenet_v2().state_dict().items()
                if not k.startswith("classifier.")}, weights)
    out = tmp_path / "frozen"
    train.main(**{**TINY, "samples": 0}, out=out, epochs=1, max_steps=2, encoder_weights=weights, freeze_encoder=True)
    saved = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    given = torch.load(weights, map_location="cpu", weights_only=True)
    enc = {k[len("encoder."):]: v for k, v in saved.items() if k.startswith("encoder.")}
    assert enc and all(torch.equal(enc[k], given[k]) for k in given)  # BatchNorm statistics included
    assert json.loads((out / "metrics.json").read_text())["train"]
    with pytest.raises(ConfigError, match="freeze-encoder"):
        train.main(**TINY, out=tmp_path / "x", freeze_encoder=True)
