"""End-to-end captioners (cnn-lstm, vit-gpt2, blip): losses fall, beam width 1 is greedy, captions are
deterministic, the train and generate entry points write what they say, and every bad input exits 2 with one message
and writes nothing. Offline, tiny models, the fixture caption set tests/data/captioners (made by its data.py)."""

from __future__ import annotations

import json
import shutil
import socket
import typing
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from huggingface_hub import constants

import segcap.hub as hub
from aerialdata.captionset import CaptionDataset
from aerialdata.images import read_rgb
from captioners import encoders, train
from captioners import generate as gen
from captioners.base import Captioner, Job
from captioners.cnn_lstm import CnnLstm, CnnLstmOptions, beam_search, greedy
from captioners.data import open_caption_set
from captioners.encoders import build_trunk, calibrate_batchnorm, encoder_weights_problems
from captioners.hf import HFText, build_tiny_vit_gpt2, hf_loss, load_checkpoint, tiny_blip_checkpoint
from captioners.model import load_captioner
from captioners.registry import ARCHS, SYSTEMS, CaptionerArch, CnnLstmTrainOptions
from captioners.text import END_ID, START_ID, UNK_ID, Vocabulary, words
from evaluation.predictions import read_predictions
from segcap.cli import config_kwargs, parse, run
from segcap.errors import ConfigError
from segcap.options import options_of
from tests.hub_cache import snapshot

HERE = Path(__file__).resolve().parent
FIX = HERE / "data" / "captioners"
CONFIGS = HERE.parent / "configs" / "captioners"
TINY_CNN = ["--image-size", "32", "--attention-grid", "4", "--feature-dim", "16", "--embed-dim", "16",
            "--hidden-dim", "32", "--attention-dim", "16", "--min-count", "1", "--batch-size", "4"]
TINY_VIT = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "patch_size": 8, "intermediate_size": 64}
MODEL_FILES = {"captioner.yaml", "metrics.json", "history.csv", "history.png"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every connection and name lookup fails: a test that reached for the network would fail, not download."""

    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    hub._probe.cache_clear()
    encoders._reachable.cache_clear()


@pytest.fixture(scope="module")
def fixture_set() -> CaptionDataset:
    return CaptionDataset(FIX)


@pytest.fixture(scope="module")
def train_captions(fixture_set) -> list[str]:
    return [s for it in fixture_set.items if it.split == "train" for s in it.sentences]


@pytest.fixture(scope="module")
def test_images(fixture_set) -> list[np.ndarray]:
    return [read_rgb(fixture_set.image_path(it.filename)) for it in fixture_set.items if it.split == "test"]


@pytest.fixture(scope="module")
def cnn_model(tmp_path_factory) -> Path:
    """A tiny cnn-lstm trained for a few epochs by the command line (shared by the tests that need a model)."""
    out = tmp_path_factory.mktemp("cnn") / "model"
    run(train.main, ["--captions", str(FIX), "--out", str(out), "--epochs", "4", "--learning-rate", "0.01",
                     "--no-progress", *TINY_CNN])
    return out


@pytest.fixture(scope="module")
def blip_checkpoint(tmp_path_factory, train_captions) -> Path:
    """A tiny randomly initialised BLIP checkpoint, built offline (a stand-in for Salesforce/blip-*)."""
    return tiny_blip_checkpoint(tmp_path_factory.mktemp("blip") / "tiny-blip", train_captions)


def _exit_2(fn, args, capsys) -> str:
    """Run ``fn`` as the shell would; assert exit code 2 and one message; return it."""
    with pytest.raises(SystemExit) as e:
        run(fn, [str(a) for a in args])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.count("error: ") == 1
    assert "problems with the options" not in err, err  # one problem, one message
    return err


def _nothing_written(folder: Path) -> None:
    assert not any(folder.iterdir()), list(folder.iterdir())


# ------------------------------------------------------------------------------------------------ vocabulary
def test_words_and_vocabulary():
    assert words("A pond, isn't it?  Trees .") == ["a", "pond", "isn't", "it", "trees"]
    vocab = Vocabulary.build(["a pond .", "a pond and trees", "a river"], min_count=2)
    assert vocab.itos == ["<pad>", "<start>", "<end>", "<unk>", "a", "pond"]
    ids = vocab.encode("A pond near trees .", max_length=3)
    assert ids == [START_ID, 4, 5, UNK_ID, END_ID]
    assert vocab.decode(ids) == "a pond"  # <unk> is not written
    assert vocab.decode([START_ID, 5, END_ID, 4]) == "pond"
    assert vocab.unknown_rate(["a pond near trees"]) == 0.5


# ------------------------------------------------------------------------------------------------ losses fall
def _steps(loss_fn, params, n: int = 8, lr: float = 3e-3) -> tuple[float, float]:
    opt = torch.optim.Adam(params, lr=lr)
    first = last = None
    for _ in range(n):
        loss = loss_fn()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
        last = float(loss.detach())
    return first, last


def test_cnn_lstm_loss_goes_down(fixture_set):
    torch.manual_seed(0)
    items = [it for it in fixture_set.items if it.split == "train"]
    vocab = Vocabulary.build([s for it in items for s in it.sentences], 1)
    model = CnnLstm(CnnLstmOptions(image_size=32, attention_grid=4, feature_dim=16, embed_dim=16, hidden_dim=32,
                                   attention_dim=16), len(vocab))
    model.trunk.requires_grad_(False)
    x = torch.stack([torch.from_numpy(read_rgb(fixture_set.image_path(it.filename)).copy()) for it in items])
    x = x.permute(0, 3, 1, 2).float() / 255
    caps = [vocab.encode(s) for it in items for s in it.sentences]
    owner = torch.tensor([i for i, it in enumerate(items) for _ in it.sentences])
    ids = torch.zeros(len(caps), max(map(len, caps)), dtype=torch.long)
    for r, c in enumerate(caps):
        ids[r, : len(c)] = torch.tensor(c)
    with torch.no_grad():
        trunk_map = model.trunk.eval()(x)
    first, last = _steps(lambda: model.loss(model.features(trunk_map)[owner], ids)[0],
                         [p for p in model.parameters() if p.requires_grad], lr=2e-2)
    assert last < first - 0.5


def test_vit_gpt2_loss_goes_down(fixture_set, train_captions):
    vocab = Vocabulary.build(train_captions, 1)
    model, tok, proc = build_tiny_vit_gpt2(vocab, 32, TINY_VIT, max_length=20, seed=0)
    items = [it for it in fixture_set.items if it.split == "train"][:4]
    pix = proc(images=[read_rgb(fixture_set.image_path(it.filename)).copy() for it in items], return_tensors="pt")
    owner = torch.tensor([i for i, it in enumerate(items) for _ in it.sentences])
    ids, labels = HFText("vit-gpt2", tok, True, 20).labels([s for it in items for s in it.sentences])
    first, last = _steps(lambda: hf_loss("vit-gpt2", model, pix["pixel_values"], owner, ids, labels)[0],
                         list(model.parameters()))
    assert last < first - 0.5


def test_blip_loss_goes_down(fixture_set, blip_checkpoint):
    torch.manual_seed(0)
    model, tok, proc = load_checkpoint(blip_checkpoint, "blip")
    items = [it for it in fixture_set.items if it.split == "train"][:4]
    pix = proc(images=[read_rgb(fixture_set.image_path(it.filename)).copy() for it in items], return_tensors="pt")
    owner = torch.tensor([i for i, it in enumerate(items) for _ in it.sentences])
    ids, labels = HFText("blip", tok, False, 20).labels([s for it in items for s in it.sentences])
    assert (ids[:, 0] == tok.bos_token_id).all()  # [DEC] first, as BLIP's decoder is trained and generates
    first, last = _steps(lambda: hf_loss("blip", model, pix["pixel_values"], owner, ids, labels)[0],
                         list(model.parameters()))
    assert last < first - 0.5


# ------------------------------------------------------------------------------------------------ decoding
def test_beam_width_1_is_greedy(cnn_model, test_images):
    cap = load_captioner(cnn_model, device="cpu")
    feats = cap.encode(test_images)
    decoder = cap.model.decoder
    torch.manual_seed(1)
    noisy = feats + 0.5 * torch.randn_like(feats)  # more varied inputs than four test images
    for f in (feats, noisy):
        assert beam_search(decoder, f, 1, 12) == greedy(decoder, f, 12)
        assert beam_search(decoder, f, 1, 2) == greedy(decoder, f, 2)  # stopped by the length limit too
        assert all(len(ids) <= 2 for ids in beam_search(decoder, f, 3, 2))


def test_a_caption_is_never_empty(cnn_model, test_images):
    """A barely trained decoder may rank <end> first: it is not allowed as the first word (scoring refuses empty
    captions), nor <unk> anywhere (it would not be written)."""
    cap = load_captioner(cnn_model, device="cpu")
    feats = cap.encode(test_images)
    decoder = cap.model.decoder
    with torch.no_grad():
        decoder.out.bias[END_ID] += 100.0  # <end> wins every step
        decoder.out.bias[UNK_ID] += 50.0
    for ids in greedy(decoder, feats, 12) + beam_search(decoder, feats, 3, 12):
        assert len(ids) == 1 and ids[0] not in (END_ID, UNK_ID)
    assert all(cap.caption(test_images, num_beams=b) for b in (1, 3))


def test_captions_are_deterministic(cnn_model, test_images):
    first = load_captioner(cnn_model, device="cpu")
    second = load_captioner(cnn_model, device="cpu")
    for beams in (1, 3):
        a = first.caption(test_images, num_beams=beams, batch_size=3)
        assert a == first.caption(test_images, num_beams=beams) == second.caption(test_images, num_beams=beams)
        assert len(a) == len(test_images) and all(isinstance(c, str) for c in a)
    assert first.arch == "cnn-lstm"
    with pytest.raises(ConfigError, match="num_beams 0 is invalid; expected an integer >= 1"):
        first.caption(test_images, num_beams=0)


# ------------------------------------------------------------------------------------------------ entry points
def test_train_writes_the_model_folder_and_generate_the_predictions(cnn_model, tmp_path, fixture_set):
    assert {p.name for p in cnn_model.iterdir()} == MODEL_FILES | {"model.pt", "vocab.json"}
    assert not any(p.name.startswith(".") for p in cnn_model.parent.iterdir())  # no temporary folder left
    metrics = json.loads((cnn_model / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["epochs"]] == [1, 2, 3, 4]
    assert metrics["epochs"][-1]["train_loss"] < metrics["epochs"][0]["train_loss"]
    assert metrics["selected_epoch"] in (1, 2, 3, 4) and metrics["train_images"] == 8
    assert (cnn_model / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = tmp_path / "preds.json"
    gen.main(model=cnn_model, captions=FIX, out=out, split="test", num_beams=2, progress=False)
    preds = json.loads(out.read_text())
    assert [p["image_id"] for p in preds] == [it.filename for it in fixture_set.items if it.split == "test"]
    refs = {it.filename: it.sentences for it in fixture_set.items if it.split == "test"}
    assert set(read_predictions(out, refs, split="test")) == set(refs)  # evaluation.score reads it


def test_vit_gpt2_train_and_generate(tmp_path, test_images):
    out = tmp_path / "vit"
    train.main(captions=FIX, out=out, arch="vit-gpt2", image_size=32, tiny_model=TINY_VIT, min_count=1, epochs=2,
               batch_size=4, progress=False)
    files = {p.name for p in out.iterdir()}
    assert MODEL_FILES | {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= files
    cap = load_captioner(out, device="cpu")
    assert cap.arch == "vit-gpt2"
    a = cap.caption(test_images, num_beams=2)
    assert a == load_captioner(out, device="cpu").caption(test_images, num_beams=2)
    assert cap.caption(test_images, num_beams=1) == cap.caption(test_images, num_beams=1, batch_size=1)


def test_blip_zero_shot_and_fine_tuned(tmp_path, blip_checkpoint, test_images):
    zero = gen.main(model=blip_checkpoint, captions=FIX, out=tmp_path / "zero.json", progress=False)
    assert len(json.loads(zero.read_text())) == 4
    out = tmp_path / "blip"
    train.main(captions=FIX, out=out, arch="blip", checkpoint=str(blip_checkpoint), epochs=1, batch_size=4,
               learning_rate=1e-3, progress=False)
    assert MODEL_FILES | {"config.json", "model.safetensors"} <= {p.name for p in out.iterdir()}
    cap = load_captioner(out, device="cpu")
    assert cap.arch == "blip" and cap.caption(test_images) == cap.caption(test_images)


def test_blip_hub_id_from_the_cache_offline(tmp_path, monkeypatch, blip_checkpoint, test_images):
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    snap = snapshot(cache, "segcap-tests/tiny-blip", ref="main")
    for f in blip_checkpoint.iterdir():
        shutil.copy(f, snap / f.name)
    cap = load_captioner("segcap-tests/tiny-blip", device="cpu")
    assert cap.arch == "blip" and len(cap.caption(test_images[:1])) == 1


def test_flickr8k_layout_is_found(tmp_path, fixture_set):
    root = tmp_path / "Flickr8k"
    shutil.copytree(FIX / "RSICD_images", root / "Flicker8k_Dataset")
    shutil.copy(FIX / "dataset_rsicd.json", root / "dataset_flickr8k.json")
    ds = open_caption_set(root / "dataset_flickr8k.json")
    assert ds.image_path("pond_1.jpg") == root / "Flicker8k_Dataset" / "pond_1.jpg"
    (root / "Flicker8k_Dataset").rename(root / "Images")
    assert open_caption_set(root / "dataset_flickr8k.json").image_path("pond_1.jpg").is_file()


# ------------------------------------------------------------------------------------------------ encoder weights
def test_weights_file_torchvision_or_segmentation_checkpoint(tmp_path):
    torch.manual_seed(3)
    full = torchvision.models.mobilenet_v2(weights=None)
    plain, prefixed = tmp_path / "mnv2.pth", tmp_path / "model.pt"
    torch.save(full.state_dict(), plain)
    torch.save({"encoder." + k: v for k, v in full.state_dict().items() if k.startswith("features.")
                } | {"decoder.x": torch.zeros(1)}, prefixed)  # a segmentation model.pt: the encoder under encoder.
    for path in (plain, prefixed):
        trunk, channels, source = build_trunk("mobilenet_v2", 8, str(path))
        assert channels == 32 and source == str(path)
        assert torch.equal(trunk[0][0].weight, full.features[0][0].weight)
    torch.save({"features.0.0.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="tensors of the mobilenet_v2 trunk are not in the file"):
        build_trunk("mobilenet_v2", 8, str(tmp_path / "bad.pt"))


def test_torchvision_weights_offline_fail_at_once_with_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    (msg,) = encoder_weights_problems("resnet50", "IMAGENET1K_V2")
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url
    for part in ("encoder_weights IMAGENET1K_V2", url, str(tmp_path / "torch-hub" / "checkpoints" / Path(url).name),
                 "HF_HUB_OFFLINE=1 is set", "leave encoder_weights empty"):
        assert part in msg, part
    cached = tmp_path / "torch-hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert encoder_weights_problems("resnet50", "IMAGENET1K_V2") == []  # cached: no network needed
    (msg,) = encoder_weights_problems("vgg16", "imagenet")
    assert "not a torchvision weights name of vgg16 (DEFAULT, IMAGENET1K_V1, IMAGENET1K_FEATURES)" in msg


def test_random_trunk_batchnorm_is_calibrated():
    torch.manual_seed(0)
    trunk, _, _ = build_trunk("mobilenet_v2", 32)
    x = torch.rand(8, 3, 64, 64)
    with torch.no_grad():
        before = trunk.eval()(x).std()
        assert calibrate_batchnorm(trunk, [x]) == 8
        after = trunk(x).std()
    assert before < 1e-3 < 0.1 < after  # random statistics make the deep features vanish; estimated, they do not


# ------------------------------------------------------------------------------------------------ errors: exit 2
def test_missing_images_exit_2(tmp_path, capsys, cnn_model):
    err = _exit_2(train.main, ["--captions", FIX, "--out", tmp_path / "m", "--images", "nowhere", *TINY_CNN], capsys)
    assert "12 of the 12 train and val images" in err and f"{FIX / 'nowhere'} does not exist" in err and "--images" in err
    err = _exit_2(gen.main, ["--model", cnn_model, "--captions", FIX, "--out", tmp_path / "p.json", "--images",
                             "nowhere"], capsys)
    assert "4 of the 4 test images" in err
    _nothing_written(tmp_path)


def test_a_model_of_another_architecture_exit_2(tmp_path, capsys, cnn_model, blip_checkpoint):
    err = _exit_2(gen.main, ["--model", cnn_model, "--captions", FIX, "--out", tmp_path / "p.json", "--arch", "blip"],
                  capsys)
    assert f"model {cnn_model} holds a cnn-lstm captioner, not blip" in err
    err = _exit_2(train.main, ["--captions", FIX, "--out", tmp_path / "m", "--arch", "vit-gpt2", "--checkpoint",
                               blip_checkpoint], capsys)
    assert f"checkpoint {blip_checkpoint} is a blip checkpoint, not vit-gpt2" in err and "--arch blip" in err
    not_a_model = HERE / "data" / "llm"
    err = _exit_2(gen.main, ["--model", not_a_model, "--captions", FIX, "--out", tmp_path / "p.json"], capsys)
    assert f"{not_a_model} is not a captioner" in err
    with pytest.raises(ConfigError, match="holds a cnn-lstm captioner, not vit-gpt2"):
        load_captioner(cnn_model, arch="vit-gpt2")
    _nothing_written(tmp_path)


def test_empty_split_exit_2(tmp_path, capsys, cnn_model):
    err = _exit_2(gen.main, ["--model", cnn_model, "--captions", FIX, "--out", tmp_path / "p.json", "--split",
                             "restval"], capsys)
    assert "no images in split 'restval' (splits present: test, train, val); choose another --split" in err
    err = _exit_2(train.main, ["--captions", FIX, "--out", tmp_path / "m", "--train-split", "restval"], capsys)
    assert "no images in split 'restval'" in err and "--train-split" in err
    _nothing_written(tmp_path)


@pytest.mark.parametrize("fn,text,expected", [
    (train.main, "arch: lstm", "arch 'lstm' is invalid; expected one of cnn-lstm, vit-gpt2, blip"),
    (train.main, "encoder_stride: 5", "encoder_stride 5 is invalid; expected one of 4, 8, 16, 32"),
    (train.main, "encoder: resnet18", "expected one of mobilenet_v2, resnet50, vgg16"),
    (train.main, "epochs: 0", "epochs 0 is invalid; expected an integer >= 1 (default: 20)"),
    (train.main, "arch: blip", "arch blip needs a checkpoint"),
    (train.main, "encoder_weights: IMAGENET1K_V1", "cannot be downloaded now (HF_HUB_OFFLINE=1 is set)"),
    (train.main, "arch: blip\ncheckpoint: Salesforce/blip-image-captioning-base",
     "hf download Salesforce/blip-image-captioning-base"),
    (train.main, "arch: vit-gpt2\nencoder: resnet50", "encoder applies to arch cnn-lstm only (arch is vit-gpt2)"),
    (train.main, "checkpoint: x", "checkpoint applies to arch vit-gpt2 and blip only (arch is cnn-lstm)"),
    (train.main, "threads: 0", "threads 0 is invalid; expected an integer >= 1 or null (default: null)"),
    (train.main, "dropout: 1.0", "dropout 1.0 is invalid; expected a number in [0, 1) (default: 0.5)"),
    (gen.main, "num_beams: 0", "num_beams 0 is invalid; expected an integer >= 1 (default: 1)"),
    (gen.main, "split: dev", "split 'dev' is invalid; expected one of test, val, train, restval"),
    (gen.main, "arch: blipp", "arch 'blipp' is invalid; expected one of cnn-lstm, vit-gpt2, blip"),
])
def test_bad_option_in_yaml_exit_2(tmp_path, capsys, monkeypatch, cnn_model, fn, text, expected):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    out = tmp_path / "out"
    out.mkdir()
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text + "\n")
    args = ["--config", cfg, "--captions", FIX, "--out", out / "x"] + (["--model", cnn_model] if fn is gen.main else [])
    err = _exit_2(fn, args, capsys)
    assert expected in err
    _nothing_written(out)


def test_existing_outputs_are_kept(tmp_path, capsys, cnn_model):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    err = _exit_2(train.main, ["--captions", FIX, "--out", tmp_path / "m", *TINY_CNN], capsys)
    assert "model folder already exists" in err and "--overwrite" in err
    err = _exit_2(train.main, ["--captions", FIX, "--out", tmp_path / "m", "--overwrite", *TINY_CNN], capsys)
    assert "--overwrite refuses to delete" in err
    (tmp_path / "p.json").write_text("[]")
    err = _exit_2(gen.main, ["--model", cnn_model, "--captions", FIX, "--out", tmp_path / "p.json"], capsys)
    assert "predictions file already exists" in err
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine" and (tmp_path / "p.json").read_text() == "[]"


# ------------------------------------------------------------------------------------------------ configs
CONFIG_COMMANDS = {name: train.main for name in ("synthetic.yaml", "rsicd.yaml", "ucm.yaml", "flickr8k.yaml",
                                                 "vit-gpt2-tiny.yaml", "vit-gpt2.yaml", "blip.yaml")}


def test_every_captioners_config_has_a_command():
    assert {p.name for p in CONFIGS.glob("*.yaml")} == set(CONFIG_COMMANDS)


@pytest.mark.parametrize("name", sorted(CONFIG_COMMANDS))
def test_captioners_config_parses_against_its_command(name):
    fn = CONFIG_COMMANDS[name]
    kwargs = config_kwargs(fn, CONFIGS / name)
    assert kwargs and set(kwargs) <= set(options_of(fn))
    parsed = parse(fn, ["--config", str(CONFIGS / name), "--out", "x"])
    assert {k: parsed[k] for k in kwargs} == kwargs


@pytest.mark.parametrize("fn", [train.main, gen.main], ids=["train", "generate"])
def test_help_shows_every_option(fn, capsys):
    with pytest.raises(SystemExit) as e:
        parse(fn, ["--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for name in options_of(fn):
        assert "--" + name.replace("_", "-") in out


# ------------------------------------------------------------------------------------------------ the table
def test_every_architecture_is_complete_in_the_table():
    assert typing.get_args(typing.get_type_hints(train.main)["arch"]) == tuple(ARCHS)  # --arch's choices
    assert typing.get_args(typing.get_type_hints(gen.main)["arch"])[0] == typing.get_type_hints(train.main)["arch"]
    params = options_of(train.main)
    assert len(SYSTEMS) == len(ARCHS)
    for name, entry in ARCHS.items():
        assert entry.name == name and SYSTEMS[entry.system] is entry and entry.note
        assert issubclass(entry.job, Job) and issubclass(entry.captioner, Captioner) and entry.captioner.arch == name
        assert set(entry.option_names) <= set(params)
        assert (entry.config is None) == entry.needs_checkpoint
        if entry.config is not None:  # the default config trains this architecture
            assert config_kwargs(train.main, entry.default_config())["arch"] == name


class ToyJob(Job):
    """A new architecture, all in this file: it learns the most frequent training caption (and one weight, so that
    the training loop has something to optimise)."""

    @classmethod
    def learning_rate(cls, o):
        return 0.1

    def __init__(self, o, train_items, device):
        self.module = torch.nn.Linear(1, 1)
        self.caption = Counter(s for it in train_items for s in it.sentences).most_common(1)[0][0]

    def loss(self, split, batch):
        loss = self.module.weight.square().sum()
        return loss, loss.detach(), 1

    def save(self, folder):
        (folder / "caption.txt").write_text(self.caption)

    def options(self):
        return {}


class ToyCaptioner(Captioner):
    arch = "toy"

    @classmethod
    def load(cls, folder, device, options=None):
        cap = cls(folder, device, 30)
        cap.text = (Path(folder) / "caption.txt").read_text()
        return cap

    def _caption_batch(self, images, num_beams, max_length):
        return [self.text] * len(images)


def test_a_new_architecture_is_one_module_and_one_entry(tmp_path, monkeypatch):
    monkeypatch.setitem(ARCHS, "toy", CaptionerArch(
        name="toy", system="toy", options=(), job_class=f"{__name__}:ToyJob",
        captioner_class=f"{__name__}:ToyCaptioner", config=None, note="the most frequent caption"))
    # --arch's choices (captioners.registry.Arch) are read from ARCHS when the registry is imported: an entry written
    # there is one of them, one patched in here is not, so this calls main underneath the typed check of --arch
    train_main = train.main.__wrapped__
    out = train_main(captions=FIX, out=tmp_path / "toy", arch="toy", epochs=1, batch_size=4, progress=False)
    assert load_captioner(out).arch == "toy"
    preds = json.loads(gen.main(model=out, captions=FIX, out=tmp_path / "p.json", progress=False).read_text())
    assert len(preds) == 4 and len({p["caption"] for p in preds}) == 1
    with pytest.raises(ConfigError, match="encoder applies to arch cnn-lstm only"):
        train_main(captions=FIX, out=tmp_path / "toy2", arch="toy", cnn_lstm=CnnLstmTrainOptions(encoder="resnet50"),
                   progress=False)
