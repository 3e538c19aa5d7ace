"""Reliability (issue 17): every bad input named before the work, nothing half-written, interrupted runs leave no
debris. One test per class of bad input and per kill point; the SIGKILL-in-every-stage run of the pipeline is slow
(``pytest -m slow tests/test_reliability.py``).

Classes of bad input: unwritable outputs (a file used as a folder, a pseudo file system, a read-only folder) refused
before any model or data loads; file-system failures during the work (full disk, read-only) as one message, exit 2;
very large images (tiles in bounded memory, PIL's pixel limit named); sideways-stored photos (EXIF orientation);
inputs that were accepted or named badly (a folder named x.jpg, --workers -3, a YAML string for an integer, a
truncated model.pt, a mask of another size, a Java that does not start); nothing created in --out before the inputs
are checked; --resume with changed options or nothing to resume; two writers of one folder.
Kill points: mid atomic write, a DataLoader's parent, a lock holder, and (slow) pipeline.run in each stage.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from aerialdata.classes import load_class_table
from aerialdata.images import image_size, read_rgb, read_rgb_scaled
from composition import extract as extract_mod
from composition import show as show_mod
from composition.extract import extract
from evaluation import metrics as eval_metrics
from evaluation import score as score_mod
from llm import finetune as finetune_mod
from llm import generate as generate_mod
from pipeline import caption as caption_mod
from pipeline import run as prun
from pipeline.executor import names
from segcap import atomic
from segcap.cli import run as run_cli
from segcap.errors import ConfigError, DataError, FolderLockedError, SegcapError
from segmentation import predict as predict_mod
from segmentation import train as train_mod
from segmentation.model import CONFIG_FORMAT, Segmenter, build_model, load_segmenter
from synthetic import generate as synthetic_mod

STAGES = names()

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DATA = TESTS / "data"
DRONE = DATA / "drone"
MASKS = DATA / "composition" / "masks"
LLM_FIX = DATA / "llm"
EVAL = DATA / "evaluation"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1",
       "PYTHONPATH": str(REPO)}
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False
DEAD_PID = 2**22 + 12345  # above Linux's default pid_max: never a running process


# ---------------------------------------------------------------- helpers
def cli(fn, args: list[str], capsys, positional=()) -> tuple[int, str]:
    """Run ``fn`` as its command line in this process: (exit code, stderr)."""
    with pytest.raises(SystemExit) as e:
        run_cli(fn, [str(a) for a in args], positional=positional)
        raise SystemExit(0)
    return e.value.code, capsys.readouterr().err


def _no_loading(monkeypatch):
    """Fail the test if a model is loaded: every check must come before."""
    def boom(*a, **k):
        raise AssertionError("a model was loaded before the outputs were checked")
    for mod, name in ((predict_mod, "load_segmenter"), (caption_mod, "load_segmenter"), (caption_mod, "Captioner"),
                      (generate_mod, "Captioner")):
        monkeypatch.setattr(mod, name, boom)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A segmentation checkpoint folder with random weights of a small UNet (no training: fast)."""
    out = tmp_path_factory.mktemp("ckpt") / "seg"
    out.mkdir()
    table = load_class_table("seed10")
    arch = {"decoder_channels": [16, 8, 8, 8, 8]}
    torch.manual_seed(0)
    torch.save(build_model(arch, table.num_classes).state_dict(), out / "model.pt")
    (out / "config.yaml").write_text(yaml.safe_dump({
        "format": CONFIG_FORMAT, "architecture": arch, "classes": table.to_dict(), "input": {"tile_size": 1024},
        "trained_on": [{"source": "drone", "root": str(DRONE), "gsd": 0.1, "synthetic": True, "images": 4}]}))
    return out


@pytest.fixture
def blocked(tmp_path) -> Path:
    """A file, used below as if it were a folder."""
    f = tmp_path / "plain_file"
    f.write_text("not a folder")
    return f


# ---------------------------------------------------------------- 1. unwritable outputs, refused before the work
def _entry_points(tmp: Path, checkpoint: Path, out: Path) -> dict:
    """Each entry point's command line with ``out`` as its output, every input valid."""
    llm_dir = tmp / "llm_model"
    llm_dir.mkdir(exist_ok=True)
    image = DRONE / "original_images" / "000.jpg"
    comps = LLM_FIX / "compositions.jsonl"
    return {
        "composition.extract": (extract_mod.main, ["--masks", MASKS, "--out", out / "c.jsonl"]),
        "composition.show": (show_mod.main, [comps, "--overlay", image, "--out", out / "o.png"]),
        "segmentation.predict": (predict_mod.main, ["--checkpoint", checkpoint, "--images", DRONE / "original_images",
                                                    "--out", out / "masks"]),
        "segmentation.train": (train_mod.main, ["--data-root", DRONE, "--out", out / "seg", "--crop-size", "32"]),
        "llm.finetune": (finetune_mod.main, ["--compositions", comps, "--captions", LLM_FIX / "rsicd",
                                             "--out", out / "llm"]),
        "llm.generate": (generate_mod.main, ["--model", llm_dir, "--compositions", comps, "--out", out / "p.json"]),
        "evaluation.score": (score_mod.main, ["--references", EVAL / "dataset_rsicd.json", "--predictions",
                                              EVAL / "sys_a.json", "--out", out / "scores"]),
        "synthetic.generate": (synthetic_mod.main, ["--out", out / "synthetic", "--drone-images", "1",
                                                    "--caption-images", "12"]),
        "pipeline.caption": (caption_mod.main, [image, "--segmentation", checkpoint, "--llm", llm_dir,
                                                "--json", out / "c.json"]),
    }


ENTRY_NAMES = ["composition.extract", "composition.show", "segmentation.predict", "segmentation.train",
               "llm.finetune", "llm.generate", "evaluation.score", "synthetic.generate", "pipeline.caption"]


@pytest.mark.parametrize("name", ENTRY_NAMES)
def test_output_under_a_file_is_refused_before_any_work(name, tmp_path, checkpoint, blocked, capsys, monkeypatch):
    _no_loading(monkeypatch)
    fn, args = _entry_points(tmp_path, checkpoint, blocked / "sub")[name]
    t0 = time.perf_counter()
    code, err = cli(fn, args, capsys, positional=("file",) if name == "composition.show" else
                    ("images",) if name == "pipeline.caption" else ())
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{blocked} is a file, not a folder" in err
    assert time.perf_counter() - t0 < 20  # before any model or data: seconds at most


@pytest.mark.parametrize("name", ["composition.extract", "segmentation.predict", "llm.finetune", "evaluation.score"])
def test_output_on_a_pseudo_file_system_is_refused(name, tmp_path, checkpoint, capsys, monkeypatch):
    _no_loading(monkeypatch)
    fn, args = _entry_points(tmp_path, checkpoint, Path("/proc/segcap-test"))[name]
    code, err = cli(fn, args, capsys)
    assert code == 2 and "cannot write" in err and "/proc" in err and "Traceback" not in err, err


@pytest.mark.skipif(ROOT, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder_is_refused(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, err = cli(extract_mod.main, ["--masks", MASKS, "--out", ro / "c.jsonl"], capsys)
    finally:
        ro.chmod(0o755)
    assert code == 2 and "not writable" in err and not list(ro.iterdir())


def test_existing_output_and_folder_for_a_file_are_named(tmp_path, capsys):
    (tmp_path / "c.jsonl").mkdir()
    code, err = cli(extract_mod.main, ["--masks", MASKS, "--out", tmp_path / "c.jsonl"], capsys)
    assert code == 2 and "is a folder; give a file path" in err


# ---------------------------------------------------------------- 2. file-system failures during the work
@pytest.mark.parametrize("code_, words", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only"),
                                          (errno.EACCES, "Permission denied")])
def test_write_failure_during_the_work_is_one_message_with_what_was_kept(code_, words, tmp_path, capsys, monkeypatch):
    out = tmp_path / "c.jsonl"
    atomic.write_text(tmp_path / "earlier.txt", "done")  # an output completed before the failure

    def failing(path, rows):
        raise OSError(code_, os.strerror(code_), str(path))

    monkeypatch.setattr(extract_mod, "write_jsonl", failing)
    code, err = cli(extract_mod.main, ["--masks", MASKS, "--out", out], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert words in err and str(out) in err and "rerun the same command" in err
    assert "earlier.txt" in err  # what this process completed, kept
    assert not out.exists()


def test_a_writer_that_hides_a_full_disk_is_reported_as_full(tmp_path, monkeypatch):
    """torch.save reports a full disk as RuntimeError; atomic_path turns it into ENOSPC naming the file."""
    monkeypatch.setattr(atomic, "_disk_full", lambda folder: True)
    with pytest.raises(OSError) as e, atomic.atomic_path(tmp_path / "model.pt") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("PytorchStreamWriter failed writing file data")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []  # the temporary is gone


def test_a_full_disk_is_refused_before_the_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 2**20, 2**20))
    code, err = cli(extract_mod.main, ["--masks", MASKS, "--out", tmp_path / "c.jsonl"], capsys)
    assert code == 2 and "is full" in err and "1.0 MiB free" in err


# ---------------------------------------------------------------- 3. large images
def test_large_images_are_segmented_in_bounded_tiles_equal_to_the_whole_blend(monkeypatch):
    table = load_class_table("seed10")
    torch.manual_seed(0)
    seg = Segmenter(build_model({"decoder_channels": [16, 8, 8, 8, 8]}, table.num_classes), table, {})
    seg.tile = 64
    rng = np.random.default_rng(0)
    import cv2

    image = cv2.resize(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8), (203, 150))
    whole = seg.logits(seg._to_tensor([image])).argmax(1)[0].numpy()  # every tile's logits in memory, blended
    calls = []
    real = seg._segment_large
    monkeypatch.setattr(seg, "_segment_large", lambda im, **k: calls.append(im.shape) or real(im, **k))
    mask = seg.predict([image])[0]
    assert calls == [(150, 203, 3)]  # the large path: one tile and one overlap strip at a time
    assert mask.shape == (150, 203) and (mask == whole).all()
    # at a scale: resized first, mask back at the input size
    assert seg.predict([image], scale=0.5)[0].shape == (150, 203)


def test_pixel_limit_is_named_with_what_to_do(tmp_path, monkeypatch):
    Image.new("RGB", (200, 100)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)  # PIL refuses above twice this
    with pytest.raises(DataError, match=r"big.png: 20000 pixels is more than segcap reads \(10,000 pixels.*tiles"):
        read_rgb(tmp_path / "big.png")


def test_caption_says_when_an_image_will_take_minutes():
    note = caption_mod._large_note(Path("photo.jpg"), 12000, 9000, 1.0, 1024)
    assert "12000x9000 (108 MP)" in note and "140 tiles" in note and "--scale" in note
    assert caption_mod._large_note(Path("x.jpg"), 12000, 9000, 0.25, 1024) is None
    assert caption_mod._large_note(Path("x.jpg"), 224, 224, 1.0, 1024) is None


# ---------------------------------------------------------------- 4. EXIF orientation
def _sideways_jpeg(path: Path, orientation: int = 6) -> Path:
    """A 40x20 picture stored sideways: white on its stored left, which is the top once turned (orientation 6)."""
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :10] = 255
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif, quality=95)
    return path


def test_exif_orientation_is_applied_and_the_composition_follows(tmp_path):
    path = _sideways_jpeg(tmp_path / "phone.jpg")
    assert image_size(path) == (20, 40)  # (width, height) as shown
    rgb = read_rgb(path)
    assert rgb.shape == (40, 20, 3) and rgb[:9].min() > 200 and rgb[12:].max() < 60  # the white band is on top
    assert read_rgb_scaled(path, 0.5).shape == (20, 10, 3)
    mask = np.where(rgb[..., 0] > 128, 3, 4).astype(np.uint8)  # water where white, vegetation elsewhere
    rec = extract(mask, load_class_table("seed10"), image=path.name)
    assert (rec["width"], rec["height"]) == (20, 40)
    water = next(c for c in rec["classes"] if c["name"] == "water")
    assert water["position"] == "top" and water["centroid"][1] < 0.2


# ---------------------------------------------------------------- 5. inputs accepted or named badly before
def test_folder_named_like_an_image_is_called_a_folder(tmp_path, checkpoint, capsys, monkeypatch):
    _no_loading(monkeypatch)
    (tmp_path / "x.jpg").mkdir()
    code, err = cli(caption_mod.main, [tmp_path / "x.jpg", "--segmentation", checkpoint, "--llm", tmp_path],
                    capsys, positional=("images",))
    assert code == 2 and "x.jpg is a folder, not an image file" in err and "not found" not in err
    with pytest.raises(DataError, match="is a folder, not an image file"):
        read_rgb(tmp_path / "x.jpg")


@pytest.mark.parametrize("fn, args", [
    (extract_mod.main, ["--masks", MASKS, "--out", "OUT/c.jsonl", "--workers", "-3"]),
    (predict_mod.main, ["--checkpoint", "CKPT", "--images", DRONE / "original_images", "--out", "OUT/m",
                        "--workers", "-3"]),
])
def test_negative_workers_are_refused(fn, args, tmp_path, checkpoint, capsys, monkeypatch):
    _no_loading(monkeypatch)
    args = [str(a).replace("OUT", str(tmp_path)).replace("CKPT", str(checkpoint)) for a in args]
    code, err = cli(fn, args, capsys)
    assert code == 2 and "--workers '-3' is invalid; expected an integer >= 0" in err and not list(tmp_path.iterdir())


def test_a_value_check_names_the_config_file_it_came_from(tmp_path, capsys):
    cfg = tmp_path / "llm.yaml"
    cfg.write_text("tiny_model: {hidden_size: abc}\n")
    code, err = cli(finetune_mod.main, ["--config", cfg, "--compositions", LLM_FIX / "compositions.jsonl",
                                        "--captions", LLM_FIX / "rsicd", "--out", tmp_path / "out"], capsys)
    assert code == 2 and f"{cfg}: tiny_model: hidden_size must be a positive integer" in err
    assert not (tmp_path / "out").exists()


def test_truncated_weights_are_called_truncated(tmp_path, checkpoint):
    broken = tmp_path / "seg"
    shutil.copytree(checkpoint, broken)
    data = (broken / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(ConfigError, match="not a readable weights file .*truncated"):
        load_segmenter(broken)


def test_show_names_the_mask_and_image_of_another_size(tmp_path, capsys):
    comps = tmp_path / "c.jsonl"
    rgb = read_rgb(DRONE / "original_images" / "000.jpg")
    mask = np.zeros(rgb.shape[:2], np.uint8)
    extract_mod.write_jsonl(comps, [extract(mask, load_class_table("seed10"), image="000.jpg")])
    other = tmp_path / "other.png"
    Image.fromarray(np.zeros((5, 7), np.uint8)).save(other)
    code, err = cli(show_mod.main, [comps, "--overlay", DRONE / "original_images" / "000.jpg", "--mask", other,
                                    "--out", tmp_path / "o.png"], capsys, positional=("file",))
    assert code == 2 and f"--mask {other} is 7x5" in err and "000.jpg" in err and not (tmp_path / "o.png").exists()


def test_a_java_that_does_not_start_is_one_message(tmp_path, capsys, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = bin_dir / "java"
    java.write_text("#!/bin/sh\necho 'Error: could not create the Java Virtual Machine.' >&2\nexit 1\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    eval_metrics._java_start_problem.cache_clear()
    try:
        code, err = cli(score_mod.main, ["--references", EVAL / "dataset_rsicd.json", "--predictions",
                                         EVAL / "sys_a.json", "--out", tmp_path / "scores"], capsys)
    finally:
        eval_metrics._java_start_problem.cache_clear()
    assert code == 2 and "Java does not start" in err and "could not create the Java Virtual Machine" in err
    assert "Traceback" not in err and not (tmp_path / "scores").exists()


# ---------------------------------------------------------------- 6. nothing created in --out before the inputs are checked
@pytest.mark.parametrize("bad", ["record", "captions", "scheduler"])
def test_finetune_writes_nothing_until_its_inputs_are_checked(bad, tmp_path):
    out = tmp_path / "out"
    comps, caps, extra = LLM_FIX / "compositions.jsonl", LLM_FIX / "rsicd", {}
    if bad == "record":
        comps = tmp_path / "bad.jsonl"
        comps.write_text('{"schema": "segcap.composition/1", "image": "x.jpg"}\n')
    elif bad == "captions":
        caps = tmp_path / "wrong.json"
        caps.write_text(json.dumps({"not": "a caption set"}))
    else:
        extra = {"lr_scheduler": "cosine_with_floor"}  # a library call skips the CLI's choice check
    with pytest.raises(SegcapError):
        finetune_mod.main(compositions=comps, captions=caps, out=out, progress=False, **extra)
    assert not out.exists()  # so the next, correct run is not refused


def test_segmentation_train_writes_nothing_until_its_data_is_read(tmp_path):
    out = tmp_path / "seg"
    no_masks = tmp_path / "captions"
    shutil.copytree(EVAL, no_masks)  # a caption set without label_images_semantic/
    with pytest.raises(SegcapError):
        train_mod.main(data_root=DRONE, out=out, crop_size=32, eval_captions=no_masks, progress=False, threads=1)
    assert not out.exists()


# ---------------------------------------------------------------- 7. resume that means it
def test_llm_resume_refuses_changed_options_and_an_empty_folder(tmp_path):
    fast = dict(compositions=LLM_FIX / "compositions.jsonl", captions=LLM_FIX / "rsicd", progress=False)
    with pytest.raises(ConfigError, match="--resume: nothing to resume in .*run without --resume"):
        finetune_mod.main(out=tmp_path / "empty", resume=True, **fast)
    out = tmp_path / "run"
    (out / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (out / finetune_mod.RUN_FILE).write_text(json.dumps(
        {"learning_rate": 0.001, "lr_scheduler": "cosine", "epochs": 2.0, "threads": 2}))
    with pytest.raises(ConfigError) as e:
        finetune_mod.main(out=out, resume=True, learning_rate=0.01, lr_scheduler="linear", epochs=1.0,
                          threads=1, **fast)
    msg = str(e.value)
    assert "learning_rate 0.001, now 0.01" in msg and "lr_scheduler 'cosine', now 'linear'" in msg
    assert "epochs 2.0, now 1.0" in msg and "threads 2" not in msg  # threads may change; epochs only grow
    shutil.rmtree(out / "checkpoints")
    with pytest.raises(ConfigError, match="no checkpoint in checkpoints/"):
        finetune_mod.main(out=out, resume=True, learning_rate=0.001, epochs=2.0, **fast)


def test_segmentation_resume_refuses_any_changed_training_option(tmp_path):
    with pytest.raises(ConfigError, match="--resume: nothing to resume in .*run without --resume"):
        train_mod.main(data_root=DRONE, out=tmp_path / "empty", resume=True, progress=False)
    out = tmp_path / "seg"
    # killed between the two renames that swap a new state in: only last.tmp/ (complete) is there
    state = out / f"{train_mod.STATE_DIR}.tmp"
    state.mkdir(parents=True)
    train_mod.TrainingState(epoch=1).write(state, {"lr": 0.003, "weight_decay": 0.0001, "threads": 4})
    assert train_mod.resumable(out) and train_mod.state_folder(out) == state
    with pytest.raises(ConfigError) as e:
        train_mod.main(data_root=DRONE, out=out, resume=True, lr=0.01, threads=1, progress=False)
    assert "lr 0.003, now 0.01" in str(e.value) and "threads 4" not in str(e.value)  # threads may change


# ---------------------------------------------------------------- 8. kill points and debris
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_write_killed_midway_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "compositions.jsonl"
    script = textwrap.dedent(f"""
        import time
        from segcap import atomic
        with atomic.atomic_path({str(target)!r}) as tmp:
            tmp.write_text("half")
            print("writing", flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout.readline().strip() == "writing"
    left = list(tmp_path.glob(".compositions.jsonl.*.tmp"))
    assert len(left) == 1
    atomic.write_text(target, "other writer")  # a live writer's temporary is never touched
    assert left[0].exists()
    p.send_signal(signal.SIGKILL)
    p.wait()
    stale = tmp_path / f".other.jsonl.{_dead_pid()}-0.tmp"  # and one of another target: left to that target
    stale.write_text("x")
    atomic.write_text(target, "rerun")
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(["compositions.jsonl", stale.name])
    assert target.read_text() == "rerun"


def test_a_rerun_of_extract_clears_what_a_killed_one_left(tmp_path, capsys):
    out = tmp_path / "c.jsonl"
    (tmp_path / f".c.jsonl.{_dead_pid()}-3.tmp").write_text("half a file")
    code, err = cli(extract_mod.main, ["--masks", MASKS, "--out", out], capsys)
    assert code == 0 and [f.name for f in tmp_path.iterdir()] == ["c.jsonl"]


def test_dataloader_workers_die_with_their_parent(tmp_path):
    pids = tmp_path / "worker.pid"
    script = textwrap.dedent(f"""
        import os, time, torch
        from torch.utils.data import DataLoader, Dataset
        from segcap.workers import WorkerInit

        class Slow(Dataset):
            def __len__(self): return 1000
            def __getitem__(self, i):
                time.sleep(0.05)
                return torch.zeros(256, 256)

        def note(worker_id):
            open({str(pids)!r}, "a").write(f"{{os.getpid()}}\\n")

        for batch in DataLoader(Slow(), batch_size=1, num_workers=2, worker_init_fn=WorkerInit(note)):
            print("batch", flush=True)
            time.sleep(60)  # the workers fill their queues meanwhile
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout.readline().strip() == "batch"
    deadline = time.time() + 10
    while len(pids.read_text().split()) < 2 and time.time() < deadline:
        time.sleep(0.05)
    workers = [int(x) for x in pids.read_text().split()]
    assert len(workers) == 2 and all(_running(w) for w in workers)
    p.send_signal(signal.SIGKILL)
    p.wait()
    deadline = time.time() + 10
    while any(_running(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_running(w) for w in workers), "a DataLoader worker outlived its killed parent"


def _running(pid: int) -> bool:
    """Alive and not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


# ---------------------------------------------------------------- 9. one writer per folder
def _hold_lock(folder: Path) -> subprocess.Popen:
    script = (f"import time; from segcap import atomic\nwith atomic.folder_lock({str(folder)!r}, 'run folder'):\n"
              "    print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=ENV)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_writer_is_refused_naming_the_first_and_a_dead_ones_lock_is_taken_over(tmp_path, capsys):
    run_dir = tmp_path / "run"
    holder = _hold_lock(run_dir)
    try:
        with pytest.raises(FolderLockedError, match=rf"run folder {run_dir} is being written by process "
                                                    rf"{holder.pid} .*kill {holder.pid}"):
            prun.main(run_dir=run_dir, data_root=tmp_path / "data", progress=False)
        with pytest.raises(FolderLockedError, match=f"process {holder.pid}"):
            finetune_mod.main(compositions=LLM_FIX / "compositions.jsonl", captions=LLM_FIX / "rsicd", out=run_dir,
                              progress=False)
        with pytest.raises(FolderLockedError, match=f"process {holder.pid}"):
            train_mod.main(data_root=DRONE, out=run_dir, crop_size=32, progress=False, threads=1)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert atomic.lock_path(run_dir).exists()  # a killed holder leaves its file; the kernel released the lock
    with atomic.folder_lock(run_dir, "run folder") as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert f"taking over the lock of {run_dir} from process {holder.pid}" in capsys.readouterr().err
    assert not atomic.lock_path(run_dir).exists() and not run_dir.exists()


# ---------------------------------------------------------------- 10. pipeline.run killed in every stage (slow)
def _tiny_pipeline(tmp: Path, name: str) -> Path:
    seg = tmp / "seg.yaml"
    seg.write_text(yaml.safe_dump({"epochs": 2, "batch_size": 4, "crop_size": 32, "target_scale": 0.5,
                                   "decoder_channels": [16, 8, 8, 8, 8], "samples": 0, "threads": 1}))
    llm = yaml.safe_load((REPO / "configs" / "llm" / "tiny.yaml").read_text())
    llm.update(epochs=2, threads=1, tiny_model={**llm["tiny_model"], "hidden_size": 32, "intermediate_size": 64,
                                                   "num_hidden_layers": 1, "num_attention_heads": 2,
                                                   "num_key_value_heads": 2, "max_position_embeddings": 256})
    (tmp / "llm.yaml").write_text(yaml.safe_dump(llm))
    cfg = {"run_dir": str(tmp / name), "data_root": str(tmp / "data"), "generate": True,
           "synthetic": {"seed": 1, "drone_images": 4, "drone_size": [96, 64], "caption_images": 12,
                         "caption_size": 64, "categories": ["pond", "river", "forest"]},
           "classes": "aerial10", "segmentation_config": str(seg), "llm_config": str(tmp / "llm.yaml"),
           "num_beams": 1, "systems": ["pipeline", "template", "nearest"], "split": "val"}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _outputs(run_dir: Path) -> dict:
    """What a run produced, comparable across runs: masks, compositions, captions, scores (no times)."""
    out = {f"masks/{p.name}": np.asarray(Image.open(p)).tobytes() for p in sorted((run_dir / "masks").glob("*.png"))}
    for rel in ("compositions/predicted.jsonl", "compositions/truth.jsonl", "predictions/pipeline.json",
                "predictions/template.json", "predictions/nearest.json"):
        out[rel] = (run_dir / rel).read_text()
    scores = json.loads((run_dir / "scores" / "scores.json").read_text())
    out["scores"] = json.dumps(scores["overall"] if "overall" in scores else scores.get("systems"), sort_keys=True)
    return out


def _children_of(marker: str) -> list[int]:
    """Live processes whose command line holds ``marker`` (a killed run's DataLoader workers keep its command line)."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="replace") and _running(int(d.name)):
                    found.append(int(d.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_pipeline_killed_in_every_stage_then_rerun_equals_a_clean_run(tmp_path):
    clean_cfg, killed_cfg = _tiny_pipeline(tmp_path, "clean"), _tiny_pipeline(tmp_path, "killed")
    cmd = [sys.executable, "-m", "pipeline.run", "--no-progress", "--config"]
    r = subprocess.run(cmd + [str(clean_cfg)], capture_output=True, text=True, cwd=REPO, env=ENV)
    assert r.returncode == 0, r.stderr[-3000:]
    killed_in = []
    for _ in range(3 * len(STAGES)):  # each attempt resumes and is killed in the next stage it reaches
        p = subprocess.Popen(cmd + [str(killed_cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             cwd=REPO, env=ENV)
        stage = None
        for line in p.stdout:
            if line.startswith("=== stage "):
                stage = line.split()[2]
                if stage not in killed_in:
                    time.sleep(0.3 if stage in ("segmentation", "llm") else 0.05)  # inside the stage's work
                    p.send_signal(signal.SIGKILL)
                    break
        p.wait()
        if p.returncode == 0:
            break
        assert p.returncode == -signal.SIGKILL
        killed_in.append(stage)
        time.sleep(0.5)
        assert not _children_of(str(killed_cfg)), f"processes left after the kill in stage {stage}"
    assert p.returncode == 0 and killed_in, killed_in
    assert set(killed_in) >= {"segmentation", "masks", "compositions", "llm", "captions", "score"}, killed_in
    run_dir = tmp_path / "killed"
    assert _outputs(run_dir) == _outputs(tmp_path / "clean")
    debris = [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".lock", ".old"))]
    assert not debris, debris
