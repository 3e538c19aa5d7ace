"""Training smoke runs (checkpoint folder, resume, caption-set mIoU, TensorBoard), prediction CLI, shards, config,
torchrun."""

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
from segcap.cli import parse, run
from segcap.errors import ConfigError, DatasetNotFoundError, OutputExistsError
from segmentation import predict, train
from segmentation.model import load_segmenter

TESTS = Path(__file__).parent
DRONE = TESTS / "data" / "drone"
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
    with pytest.raises(ConfigError, match="eval-every"):
        train.main(**TINY, out=tmp_path / "bad", eval_every=0)


def test_bad_options_reported_together(tmp_path):
    with pytest.raises(ConfigError) as e:
        train.main(data_root=DRONE, out=tmp_path / "x", crop_size=50, batch_size=0, target_scale=-1)
    msg = str(e.value)
    assert "3 problems" in msg and "multiple of 32" in msg and "try 64" in msg


def test_config_parses_against_entry_point(tmp_path):
    kwargs = parse(train.main, ["--config", str(REPO / "configs" / "segmentation.yaml")])
    assert kwargs["target_scale"] < 1 and kwargs["crop_size"] % 32 == 0
    assert kwargs["data_root"] == Path("data/synthetic/drone")
    # every option passes the checks: the run stops only at the (here absent) data
    with pytest.raises(DatasetNotFoundError):
        train.main(**{**kwargs, "data_root": tmp_path / "no_drone", "out": tmp_path / "o", "progress": False})


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
