"""Reliability, round 3 (issue 26): the training entry points check their outputs and inputs before any work and
leave nothing behind when they refuse; blank captions are refused (all) or left out with a note (some), and no
captioner writes an empty caption with exit code 0; a batch command in which every item failed exits 2 naming the
count. Tiny fixtures and no real training (a stage is replaced where a test needs the run to go that far): seconds.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from aerialdata.captionset import CaptionDataset, is_blank, screen_blank_captions
from aerialdata.classes import load_class_table
from captioners import generate as gen_mod
from captioners import train as ctrain_mod
from captioners.base import write_config
from captioners.cnn_lstm import CnnLstmJob
from captioners.text import SPECIALS, Vocabulary
from composition import extract as extract_mod
from llm import finetune as finetune_mod
from llm.examples import PromptTemplate
from segcap import atomic
from segcap.cli import run as run_cli
from segcap.errors import ConfigError, DataError
from segmentation import predict as predict_mod
from segmentation import train as strain_mod
from segmentation.model import CONFIG_FORMAT, build_model

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
DRONE = DATA / "drone"
CAPS = DATA / "captioners"
LLM_FIX = DATA / "llm"
TINY_CNN = ["--image-size", "32", "--attention-grid", "4", "--feature-dim", "16", "--embed-dim", "16",
            "--hidden-dim", "32", "--attention-dim", "16", "--min-count", "1", "--batch-size", "4", "--epochs", "1",
            "--no-progress"]
SEG_FAST = dict(crop_size=32, decoder_channels=(16, 8, 8, 8, 8), epochs=1, batch_size=2, progress=False, threads=1,
                samples=0)
LLM_TINY = dict(tiny_model={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                            "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 128},
                tokenizer={"kind": "word", "vocab_size": 200}, batch_size=8, max_length=128, progress=False,
                threads=1, epochs=1)


# ---------------------------------------------------------------- helpers
def cli(fn, args: list, capsys) -> tuple[int, str]:
    """Run ``fn`` as its command line in this process: (exit code, stderr)."""
    with pytest.raises(SystemExit) as e:
        run_cli(fn, [str(a) for a in args])
        raise SystemExit(0)
    return e.value.code, capsys.readouterr().err


def one_message(code: int, err: str, batch: bool = False) -> str:
    """Exit code 2 and one message, no traceback; the message (a batch command says what it skipped first)."""
    assert code == 2, err
    if batch:
        err = err.strip().splitlines()[-1]
    assert err.startswith("error: ") and err.count("error: ") == 1 and "Traceback" not in err, err
    return err


def _boom(what: str):
    def boom(*a, **k):
        raise AssertionError(f"{what} before the checks were done")
    return boom


class _Stop(Exception):
    """Raised by a stand-in stage to end a run once the checks have passed."""


def _caption_set(tmp: Path, blank: dict[str, list[int] | str]) -> Path:
    """A copy of the captioners fixture whose named images have the given captions blank (a list of sentence
    indices, or "all"); returns the JSON's path."""
    root = tmp / "caps"
    shutil.copytree(CAPS, root, ignore=shutil.ignore_patterns("data.py"))
    path = root / "dataset_rsicd.json"
    doc = json.loads(path.read_text())
    for im in doc["images"]:
        which = blank.get(im["filename"], blank.get("*", []))
        for j, s in enumerate(im["sentences"]):
            if which == "all" or j in which:
                s["raw"], s["tokens"] = [" ", "", " . "][j % 3], []
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def blocked(tmp_path) -> Path:
    """A file, used below as if it were a folder."""
    f = tmp_path / "plain_file"
    f.write_text("not a folder")
    return f


@pytest.fixture(scope="module")
def seg_checkpoint(tmp_path_factory) -> Path:
    """A segmentation checkpoint folder with random weights of a small UNet (no training)."""
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


def _captioner_folder(folder: Path, words: list[str]) -> Path:
    """A cnn-lstm model folder as captioners.train leaves it, enough for generate's checks (no weights)."""
    folder.mkdir(parents=True)
    Vocabulary([*SPECIALS, *words], 1).save(folder / "vocab.json")
    write_config(folder, "cnn-lstm", {"max_length": 30}, {})
    return folder


# ---------------------------------------------------------------- 2. outputs checked before any work
def _read_only(monkeypatch):
    """The probe of check_writable fails as on a read-only mount (as root, a chmod would not stop the write)."""
    def refuse(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))
    monkeypatch.setattr(atomic.tempfile, "mkstemp", refuse)


@pytest.mark.parametrize("where", ["under a file", "pseudo file system", "read-only"])
def test_captioners_train_checks_its_output_before_training(where, tmp_path, blocked, capsys, monkeypatch):
    monkeypatch.setattr(CnnLstmJob, "__init__", _boom("the captioner was built"))
    out = {"under a file": blocked / "sub", "pseudo file system": Path("/proc/segcap-test"),
           "read-only": tmp_path / "model"}[where]
    if where == "read-only":
        _read_only(monkeypatch)
    err = one_message(*cli(ctrain_mod.main, ["--captions", CAPS, "--out", out, *TINY_CNN], capsys))
    assert f"cannot write model folder {out}" in err
    assert {"under a file": f"{blocked} is a file, not a folder", "pseudo file system": "pseudo file system",
            "read-only": "read-only file system"}[where] in err
    assert not (tmp_path / "model").exists()


def test_segmentation_train_refuses_its_encoder_weights_before_making_the_folder(tmp_path):
    weights = tmp_path / "encoder.pth"
    weights.write_bytes(b"not a state dict")
    out = tmp_path / "seg"
    with pytest.raises(ConfigError, match="encoder.pth"):
        strain_mod.main(data_root=DRONE, out=out, encoder_weights=weights, **SEG_FAST)
    assert not out.exists()  # was: an empty folder


def test_segmentation_train_reads_every_file_header_before_making_the_folder(tmp_path):
    data = tmp_path / "drone"
    shutil.copytree(DRONE, data)
    (data / "original_images" / "003.jpg").write_bytes(b"")
    (data / "label_images_semantic" / "001.png").write_bytes(b"not a png")
    out = tmp_path / "seg"
    with pytest.raises(DataError) as e:
        strain_mod.main(data_root=data, out=out, **SEG_FAST)
    msg = str(e.value)
    assert "2 of the 6 images of the drone source" in msg and "003.jpg" in msg and "001.png" in msg
    assert not out.exists()  # was: config.yaml, written before the first epoch met the file


def test_segmentation_train_removes_what_it_wrote_when_the_first_epoch_fails(tmp_path, monkeypatch):
    def bad_epoch(*a, **k):
        raise DataError("a file that turned out unreadable in the first epoch")

    monkeypatch.setattr(strain_mod, "fit_epoch", bad_epoch)
    out = tmp_path / "seg"
    with pytest.raises(DataError):
        strain_mod.main(data_root=DRONE, out=out, **SEG_FAST)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no config.yaml, no folder, no lock file
    kept = tmp_path / "mine"
    kept.mkdir()
    (kept / "notes.txt").write_text("the user's")
    with pytest.raises(DataError):
        strain_mod.main(data_root=DRONE, out=kept, **SEG_FAST)
    assert sorted(p.name for p in kept.iterdir()) == ["notes.txt"]  # what was there before stays


def test_segmentation_train_keeps_a_saved_epoch_when_a_later_one_fails(tmp_path, monkeypatch):
    real = strain_mod.fit_epoch
    calls = []

    def second_fails(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise DataError("broken in epoch 2")
        return real(*a, **k)

    monkeypatch.setattr(strain_mod, "fit_epoch", second_fails)
    out = tmp_path / "seg"
    with pytest.raises(DataError):
        strain_mod.main(data_root=DRONE, out=out, **{**SEG_FAST, "epochs": 2})
    assert strain_mod.resumable(out) and (out / "config.yaml").is_file()  # --resume goes on from epoch 1


@pytest.mark.parametrize("existed", [False, True])
def test_finetune_leaves_nothing_when_it_fails_before_its_first_checkpoint(existed, tmp_path, monkeypatch):
    def no_model(*a, **k):
        raise ConfigError("base model refused")

    monkeypatch.setattr(finetune_mod, "load_base", no_model)
    out = tmp_path / "llm"
    if existed:
        out.mkdir()
    with pytest.raises(ConfigError, match="base model refused"):
        finetune_mod.main(compositions=LLM_FIX / "compositions.jsonl", captions=LLM_FIX / "rsicd", out=out, **LLM_TINY)
    # was: run.json and the tokenizer, so that the next run was refused without --overwrite
    assert (out.is_dir() and not any(out.iterdir())) if existed else not out.exists()


@pytest.mark.parametrize("name", ["captioners.generate", "segmentation.predict", "composition.extract"])
def test_other_writers_check_their_output_before_loading(name, tmp_path, blocked, seg_checkpoint, capsys,
                                                         monkeypatch):
    for mod, attr in ((gen_mod, "load_captioner"), (predict_mod, "load_segmenter")):
        monkeypatch.setattr(mod, attr, _boom("a model was loaded"))
    model = _captioner_folder(tmp_path / "cap", ["a", "pond"])
    fn, args = {
        "captioners.generate": (gen_mod.main, ["--model", model, "--captions", CAPS, "--out", blocked / "p.json"]),
        "segmentation.predict": (predict_mod.main, ["--checkpoint", seg_checkpoint, "--images",
                                                    DRONE / "original_images", "--out", blocked / "masks"]),
        "composition.extract": (extract_mod.main, ["--masks", DATA / "composition" / "masks",
                                                   "--out", blocked / "c.jsonl"]),
    }[name]
    err = one_message(*cli(fn, args, capsys))
    assert f"{blocked} is a file, not a folder" in err


# ---------------------------------------------------------------- 3. blank captions
def test_blank_is_no_letter_and_no_digit():
    assert all(is_blank(c) for c in ("", "   ", ".", " - , ", "\t"))
    assert not any(is_blank(c) for c in ("a", "2 cars", "é", " x ."))


def test_screen_leaves_out_and_notes_or_refuses(tmp_path):
    ds = CaptionDataset(_caption_set(tmp_path, {"pond_1.jpg": "all", "pond_2.jpg": [0]}))
    train = [it for it in ds.items if it.split == "train"]
    kept, note, problem = screen_blank_captions(train, "X, train split", "--train-split")
    assert problem is None and [it.filename for it in kept][0] == "pond_2.jpg" and len(kept) == 7
    assert len(kept[0].sentences) == 4 and not any(is_blank(s) for it in kept for s in it.sentences)
    assert "6 of 40 captions are blank" in note and "1 of 8 images are left out" in note and "pond_1.jpg" in note
    assert len(train[1].sentences) == 5  # the caption set's own items are not changed
    _, note, problem = screen_blank_captions(train[:1], "X, train split", "--train-split")
    assert note is None and "all 5 captions of its 1 images are blank" in problem and "--train-split" in problem


def test_finetune_refuses_a_caption_set_of_blank_captions(tmp_path):
    caps = _llm_caps(tmp_path, {"*": "all"})
    out = tmp_path / "llm"
    with pytest.raises(DataError) as e:  # was: "train 0", then an IndexError
        finetune_mod.main(compositions=LLM_FIX / "compositions.jsonl", captions=caps, out=out, **LLM_TINY)
    msg = str(e.value)
    assert "train split: all 40 captions of its 8 images are blank" in msg and "pond_1.jpg sentences[0]" in msg
    assert "--train-split" in msg
    assert not out.exists()  # was: run.json, the tokenizer and checkpoints/, so the next run was refused


def _llm_caps(tmp: Path, blank: dict) -> Path:
    """The LLM fixture's caption set with the given captions blank (as :func:`_caption_set`)."""
    path = tmp / "llm_caps.json"
    doc = json.loads((LLM_FIX / "rsicd" / "dataset_rsicd.json").read_text())
    for im in doc["images"]:
        which = blank.get(im["filename"], blank.get("*", []))
        for j, s in enumerate(im["sentences"]):
            if which == "all" or j in which:
                s["raw"] = ["", "  ", "."][j % 3]
    path.write_text(json.dumps(doc))
    return path


def test_finetune_leaves_out_some_blank_captions_with_a_note(tmp_path):
    caps = _llm_caps(tmp_path, {"pond_1.jpg": "all", "pond_2.jpg": [1, 2]})
    data = finetune_mod._read_examples(LLM_FIX / "compositions.jsonl", caps, "train", "val", PromptTemplate(), True,
                                       False, "all", 0)
    assert len(data.notes) == 1 and "7 of 40 captions are blank" in data.notes[0] and "pond_1.jpg" in data.notes[0]
    names = [im.image for im in data.train_images]
    assert "pond_1.jpg" not in names and len(names) == 7
    assert not any(is_blank(c) for im in data.train_images for c in im.captions)
    assert all(refs and not any(is_blank(c) for c in refs) for refs in data.train_refs)  # the retrieval index too


def test_captioners_train_refuses_blank_captions_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(CnnLstmJob, "__init__", _boom("the captioner was built"))
    caps = _caption_set(tmp_path, {"*": "all"})
    out = tmp_path / "model"
    err = cli(ctrain_mod.main, ["--captions", caps, "--out", out, *TINY_CNN], capsys)[1]
    assert "train split: all 40 captions of its 8 images are blank" in err  # was: trained on a 4-word vocabulary
    assert "val split: all 20 captions" in err and "pond_1.jpg sentences[0]" in err
    assert not out.exists()


def test_captioners_train_leaves_out_some_blank_captions_with_a_note(tmp_path, capsys, monkeypatch):
    seen = {}

    def job(self, opts, train, dev):
        seen["train"] = train
        raise _Stop

    monkeypatch.setattr(CnnLstmJob, "__init__", job)
    caps = _caption_set(tmp_path, {"pond_1.jpg": "all", "forest_1.jpg": [0]})
    with pytest.raises(_Stop):
        ctrain_mod.main(captions=caps, out=tmp_path / "model", image_size=32, min_count=1, progress=False)
    names = [it.filename for it in seen["train"]]
    assert "pond_1.jpg" not in names and len(names) == 7
    assert all(s.strip(" .") for it in seen["train"] for s in it.sentences)
    err = capsys.readouterr().err
    assert "note: " in err and "6 of 40 captions are blank" in err and "1 of 8 images are left out" in err


def test_captioners_train_refuses_a_min_count_that_leaves_no_word(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(CnnLstmJob, "__init__", _boom("the captioner was built"))
    args = ["--captions", CAPS, "--out", tmp_path / "model", *TINY_CNN, "--min-count", "1000"]
    err = one_message(*cli(ctrain_mod.main, args, capsys))
    assert "min_count 1000" in err and "vocabulary would hold no word" in err and "lower --min-count" in err


def test_generate_refuses_a_model_without_words_before_loading_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gen_mod, "load_captioner", _boom("the model was loaded"))
    model = _captioner_folder(tmp_path / "model", [])  # what a caption set of blank captions trained
    out = tmp_path / "p.json"
    err = one_message(*cli(gen_mod.main, ["--model", model, "--captions", CAPS, "--out", out], capsys))
    assert "holds no word" in err and not out.exists()  # was: "" for every image, exit code 0


class _Mute:
    """A captioner that writes ``captions`` (cycled) whatever the image."""

    arch = "cnn-lstm"

    def __init__(self, captions):
        self.captions = captions

    def caption(self, images, **k):
        return [self.captions[i % len(self.captions)] for i in range(len(images))]


@pytest.mark.parametrize("captions, count", [([""], "every one of the 4"), (["a pond", " "], "2 of the 4")])
def test_generate_never_writes_an_empty_caption(captions, count, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gen_mod, "load_captioner", lambda *a, **k: _Mute(captions))
    model = _captioner_folder(tmp_path / "model", ["a", "pond"])
    out = tmp_path / "p.json"
    err = one_message(*cli(gen_mod.main, ["--model", model, "--captions", CAPS, "--out", out, "--no-progress"],
                           capsys))
    assert f"wrote an empty caption for {count} images" in err and "forest_4.jpg" in err and not out.exists()


# ---------------------------------------------------------------- 7. a batch in which every item failed
def test_predict_exits_2_when_every_image_fails(tmp_path, seg_checkpoint, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("a.jpg", "b.png", "c.jpg"):
        (images / name).write_bytes(b"" if name != "b.png" else b"not an image")
    out = tmp_path / "masks"
    err = one_message(*cli(predict_mod.main, ["--checkpoint", seg_checkpoint, "--images", images, "--out", out,
                                              "--workers", "0", "--no-progress"], capsys), batch=True)
    assert "all 3 images in" in err and "a.jpg" in err  # was: "0 masks written", exit code 0
    assert len(json.loads((out / "failed.json").read_text())) == 3 and not list(out.glob("*.png"))


def test_extract_exits_2_when_every_mask_fails(tmp_path, capsys):
    masks = tmp_path / "masks"
    masks.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (masks / name).write_bytes(b"")
    out = tmp_path / "c.jsonl"
    err = one_message(*cli(extract_mod.main, ["--masks", masks, "--out", out], capsys), batch=True)
    assert "all 3 masks" in err and "a.png" in err and not out.exists()


def test_generate_names_every_unreadable_image_before_loading(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gen_mod, "load_captioner", _boom("the model was loaded"))
    caps = _caption_set(tmp_path, {})
    for im in CaptionDataset(caps, split="test"):
        (caps.parent / "RSICD_images" / im.filename).write_bytes(b"")
    model = _captioner_folder(tmp_path / "model", ["a", "pond"])
    out = tmp_path / "p.json"
    err = one_message(*cli(gen_mod.main, ["--model", model, "--captions", caps, "--out", out], capsys))
    assert "all 4 of the 4 test images" in err and "pond_4.jpg" in err and "beach_4.jpg" in err  # was: the first only
    assert not out.exists()


def test_generate_partly_unreadable_split_counts_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gen_mod, "load_captioner", _boom("the model was loaded"))
    caps = _caption_set(tmp_path, {})
    (caps.parent / "RSICD_images" / "pond_4.jpg").write_bytes(np.zeros(10, np.uint8).tobytes())
    model = _captioner_folder(tmp_path / "model", ["a", "pond"])
    err = one_message(*cli(gen_mod.main, ["--model", model, "--captions", caps, "--out", tmp_path / "p.json"],
                           capsys))
    assert "1 of the 4 test images" in err and "all " not in err.split("test images")[0]
