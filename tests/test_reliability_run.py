"""Reliability, round 3 (issue 26): a whole run is not lost at its last stage, bad values are named down to their key,
and the tracebacks that were left are one message each.

1. ``pipeline.run`` checks every input its stages will read before the first one (the caption set's images, its
   splits, segmentation sources, weights files, a given checkpoint, the consensus pool's training images), runs to its
   report on a caption set in UCM-captions' layout (``imgs/N.tif`` + ``dataset_ucm.json``, made here from the
   synthetic generator so that it runs in CI), and prints the composition-health flags once the compositions exist,
   and again with the summary of a run that stops later.
2. ``--sources`` from the command line (a YAML/JSON list), each bad source entry named by its key (did you mean...),
   a root that is a file called a file; a consensus pool larger than the training set refused (llm.generate,
   Captioner, pipeline.run).
3. One message, exit code 2: a java that starts but whose PTB tokenizer fails; an app address that does not resolve
   and a port that is taken (before the URL is printed); a weights file that PyTorch refuses (its multi-line advice
   cut to one line of ours); a truncated captioner model.pt (called truncated, not "does not fit").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import app.__main__ as app_main
from aerialdata.classes import load_class_table
from aerialdata.sources import SourceSpec, open_source
from captioners.base import write_config
from captioners.cnn_lstm import WEIGHTS_FILE, CnnLstm, CnnLstmOptions
from captioners.encoders import build_trunk
from captioners.model import load_captioner
from captioners.text import VOCAB_FILE, Vocabulary
from composition.extract import extract
from evaluation import metrics as eval_metrics
from evaluation import score as score_mod
from llm import generate as generate_mod
from llm.generate import Captioner
from pipeline import run as prun
from pipeline.executor import names
from segcap.atomic import write_jsonl
from segcap.cli import parse
from segcap.cli import run as run_cli
from segcap.errors import ConfigError, DataError
from segmentation import train as train_mod
from segmentation.model import CONFIG_FORMAT, build_model
from synthetic import generate as synthetic_mod
from tests.test_pipeline_e2e import llm_config

STAGES = names()

TESTS = Path(__file__).resolve().parent
EVAL = TESTS / "data" / "evaluation"
HAVE_JAVA = shutil.which("java") is not None
POOL_SYSTEMS = ("pipeline", "pipeline_pool", "template")


# ---------------------------------------------------------------- helpers and fixtures
def cli(fn, args: list, capsys, **kw) -> tuple[int, str, str]:
    """Run ``fn`` as its command line in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        run_cli(fn, [str(a) for a in args], **kw)
        raise SystemExit(0)
    captured = capsys.readouterr()
    return e.value.code, captured.out, captured.err


def one_message(err: str) -> str:
    """The one ``error:`` line of a command that failed cleanly (progress lines may come before it)."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert lines and lines[-1].startswith("error: ") and sum(x.startswith("error:") for x in lines) == 1, err
    return lines[-1]


@pytest.fixture(scope="module")
def ucm_set(tmp_path_factory) -> Path:
    """A caption set in UCM-captions' layout: ``imgs/N.tif`` and ``dataset_ucm.json`` (dataset "ucm"), no class
    folders and no masks, made from 12 images of the synthetic generator (6 train, 3 val, 3 test)."""
    tmp = tmp_path_factory.mktemp("ucm")
    synthetic_mod.main(out=tmp / "syn", seed=1, drone_images=1, drone_size=(64, 64), caption_images=12,
                       caption_size=64, categories=["pond", "river", "forest"], progress=False)
    src = tmp / "syn" / "rsicd"
    data = json.loads((src / "dataset_rsicd.json").read_text())
    root = tmp / "ucm"
    (root / "imgs").mkdir(parents=True)
    for n, im in enumerate(data["images"], 1):
        with Image.open(src / "RSICD_images" / im["filename"]) as rgb:
            rgb.save(root / "imgs" / f"{n}.tif")
        im["filename"] = f"{n}.tif"
    (root / "dataset_ucm.json").write_text(json.dumps({"images": data["images"], "dataset": "ucm"}))
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A segmentation checkpoint folder with random weights of a small UNet (no training: fast)."""
    out = tmp_path_factory.mktemp("ckpt") / "seg"
    out.mkdir()
    table = load_class_table("aerial10")
    arch = {"decoder_channels": [16, 8, 8, 8, 8]}
    torch.manual_seed(0)
    torch.save(build_model(arch, table.num_classes).state_dict(), out / "model.pt")
    (out / "config.yaml").write_text(yaml.safe_dump({
        "format": CONFIG_FORMAT, "architecture": arch, "classes": table.to_dict(), "input": {"tile_size": 1024},
        "trained_on": [{"source": "synthetic", "gsd": 1.0, "synthetic": True, "images": 4}]}))
    (out / "metrics.json").write_text("{}")
    return out


def options(tmp: Path, captions: Path, checkpoint: Path, **over) -> dict:
    """pipeline.run on ``captions`` with a given segmentation checkpoint and a one-layer LM, every file checked."""
    return {**dict(run_dir=tmp / "run", data_root=tmp / "unused", captions_root=captions, generate=False,
                   segmentation_checkpoint=checkpoint, classes="aerial10",
                   llm_config=llm_config(tmp, save_checkpoints=False, threads=1),
                   llm={"tiny_model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "num_key_value_heads": 2,
                                       "max_position_embeddings": 256}},
                   num_beams=1, systems=("pipeline", "template"), split="test", progress=False, consensus=2,
                   retrieval_k=2), **over}


@pytest.fixture
def no_stage(stage_bodies) -> None:
    """Fail the test if any stage starts: the inputs must be refused before the first."""
    def boom(run, fresh, commands):
        raise AssertionError("a stage ran before the inputs were checked")
    stage_bodies(dict.fromkeys(STAGES, boom))


def pickled_object(path: Path) -> Path:
    """A torch.save file holding a Python object besides tensors, which a weights-only torch.load refuses."""
    torch.save({"features.0.0.weight": torch.zeros(1), "args": argparse.Namespace(lr=1)}, path)
    return path


# ---------------------------------------------------------------- 1. the pipeline: inputs first, to its report
class NoMeteor:
    """METEOR's stand-in (score 0): its JVM takes 10-25 s to load its paraphrase table, and METEOR is not what
    :func:`test_ucm_layout_runs_to_its_report` is about (tests/test_evaluation.py scores it)."""

    start_seconds = 0.0

    def __init__(self):
        self._future: Future = Future()
        self._future.set_result(None)

    def compute_score(self, gts: dict, res: dict) -> float:
        return 0.0

    def close(self) -> None:
        pass


@pytest.mark.skipif(not HAVE_JAVA, reason="the score stage needs Java (the PTB tokenizer)")
def test_ucm_layout_runs_to_its_report(tmp_path, ucm_set, checkpoint, monkeypatch):
    """imgs/N.tif + dataset_ucm.json, found without options, through every stage to report.md and examples.png (the
    report's examples read the images folder: a 46-minute run once failed there)."""
    monkeypatch.setattr(eval_metrics, "_MeteorProcess", NoMeteor)
    torch_threads = torch.get_num_threads()
    try:
        rows = prun.main(**options(tmp_path, ucm_set, checkpoint))
    finally:
        torch.set_num_threads(torch_threads)
    assert [r["status"] for r in rows] == ["ran"] * len(STAGES)
    run = tmp_path / "run"
    assert len(list((run / "masks").glob("*.png"))) == 12
    report = (run / "report.md").read_text()
    assert "dataset_ucm.json" in report and "## Examples" in report and (run / "examples.png").stat().st_size > 0
    scores = json.loads((run / "scores" / "scores.json").read_text())
    assert {"pipeline", "template", "human"} <= set(scores["systems"])


@pytest.mark.parametrize("bad", ["missing image", "no images folder", "empty split", "broken image"])
def test_caption_set_problems_stop_the_run_before_its_first_stage(bad, tmp_path, ucm_set, checkpoint, no_stage):
    captions = tmp_path / "ucm"
    shutil.copytree(ucm_set, captions)
    over = {}
    if bad == "missing image":
        (captions / "imgs" / "7.tif").unlink()
        words = ["1 of the 12 images", "7.tif", str(captions / "imgs"), "images_dir"]
    elif bad == "no images folder":
        (captions / "imgs").rename(captions / "photos")
        words = ["has no images folder", "imgs", "set images_dir"]
    elif bad == "empty split":
        data = json.loads((captions / "dataset_ucm.json").read_text())
        for im in data["images"]:
            im["split"] = "train" if im["split"] == "val" else im["split"]
        (captions / "dataset_ucm.json").write_text(json.dumps(data))
        over["split"] = "val"
        words = ["no images in split 'val'", "splits present: test, train", "set split to one of test"]
    else:
        (captions / "imgs" / "3.tif").write_bytes(b"not a tiff")
        data = json.loads((captions / "dataset_ucm.json").read_text())
        data["images"].insert(0, data["images"].pop(2))  # the first image named is the broken one
        (captions / "dataset_ucm.json").write_text(json.dumps(data))
        words = ["3.tif"]
    with pytest.raises(ConfigError) as e:
        prun.main(**options(tmp_path, captions, checkpoint, **over))
    for w in words:
        assert w in str(e.value), str(e.value)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_segmentation_inputs_are_read_before_the_first_stage(tmp_path, ucm_set, checkpoint, no_stage):
    """A truncated given checkpoint; a sources root that is a file and a misspelt kind; an encoder weights file that
    PyTorch refuses: all found before the first stage, and named."""
    broken = tmp_path / "seg"
    shutil.copytree(checkpoint, broken)
    data = (broken / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ConfigError, match=r"segmentation_checkpoint: .*model.pt: not a readable weights file \(.*"
                                          "truncated or corrupt"):
        prun.main(**options(tmp_path, ucm_set, broken))

    a_file = tmp_path / "loveda.zip"
    a_file.write_bytes(b"PK")
    weights = pickled_object(tmp_path / "encoder.pth")
    seg = {"sources": [{"kind": "loveda", "root": str(a_file)}], "caption_gsd": 0.3, "target_scale": None,
           "encoder_weights": str(weights)}
    with pytest.raises(ConfigError) as e:
        prun.main(**options(tmp_path, ucm_set, None, segmentation=seg))
    msg = str(e.value)
    assert f"root {a_file} is a file, not a folder" in msg, msg
    assert "encoder.pth: not a readable state dict: it holds pickled Python objects (argparse.Namespace)" in msg
    assert "Please" not in msg and "weights_only` argument" not in msg

    seg["sources"] = [{"kind": "lovdea", "root": str(tmp_path)}]
    with pytest.raises(ConfigError, match=r"sources\[0\]\.kind 'lovdea' is not one of drone, loveda, openearthmap, "
                                          r"folder \(did you mean loveda\?\)"):
        prun.main(**options(tmp_path, ucm_set, None, segmentation=seg))
    assert not (tmp_path / "run").exists()


def test_a_consensus_pool_larger_than_the_training_set_is_refused_before_the_first_stage(
        tmp_path, ucm_set, checkpoint, no_stage):
    with pytest.raises(ConfigError, match="retrieval_k 50 is more than the 6 training images .* give at most 6.*"
                                          "used by pipeline_pool"):
        prun.main(**options(tmp_path, ucm_set, checkpoint, systems=POOL_SYSTEMS, retrieval_k=50))


def _degenerate_stages(monkeypatch, stage_bodies, fail_at: str) -> list[str]:
    """Stand-in stages: the compositions stage writes 24 records of one class (health flags), ``fail_at`` fails."""
    ran: list[str] = []
    table = load_class_table("aerial10")

    def stage(name):
        def fn(run, fresh, commands):
            ran.append(name)
            if name == "compositions":
                mask = np.full((16, 16), 1, np.uint8)
                write_jsonl(run.layout.predicted, [extract(mask, table, image=f"{i}.tif") for i in range(24)])
            if name == fail_at:
                raise DataError(f"{name} broke")
            return {}
        return fn

    stage_bodies({s: stage(s) for s in STAGES})
    monkeypatch.setattr(prun, "input_problems", lambda run, stages=None: [])
    return ran


def test_health_flags_printed_once_the_compositions_exist_and_again_when_a_later_stage_fails(
        tmp_path, monkeypatch, capsys, stage_bodies):
    ran = _degenerate_stages(monkeypatch, stage_bodies, fail_at="captions")
    code, out, err = cli(prun.main, ["--run-dir", tmp_path / "run", "--data-root", tmp_path / "data",
                                     "--no-progress"], capsys)
    assert code == 2 and one_message(err) and "captions broke" in err
    warning = "warning: the predicted compositions look degenerate: one class dominant: "
    assert out.count(warning) == 2, out
    # the first, right after the compositions stage, before the next stage starts
    assert out.index(warning) < out.index("=== stage llm")
    summary = out[out.index("=== stage captions"):]
    assert warning in summary and "captions      failed" in summary and "the run stopped in stage captions" in summary
    assert ran[-1] == "captions"


# ---------------------------------------------------------------- 2. sources from the command line, named problems
def test_sources_from_the_command_line_as_in_a_config(tmp_path):
    root = tmp_path / "LoveDA"
    listed = f"[{{kind: loveda, root: {root}, gsd: 0.3}}, {{kind: drone, root: {tmp_path}, gsd: 0.05}}]"
    as_json = json.dumps([{"kind": "loveda", "root": str(root), "gsd": 0.3},
                          {"kind": "drone", "root": str(tmp_path), "gsd": 0.05}])
    per_value = [f"{{kind: loveda, root: {root}, gsd: 0.3}}", f"{{kind: drone, root: {tmp_path}, gsd: 0.05}}"]
    config = tmp_path / "seg.yaml"
    config.write_text(yaml.safe_dump({"sources": yaml.safe_load(listed)}))
    want = [("loveda", root, 0.3), ("drone", tmp_path, 0.05)]
    for args in (["--sources", listed], ["--sources", as_json], ["--sources", *per_value], ["--config", str(config)]):
        got = parse(train_mod.main, args)["sources"]
        specs = [train_mod._source_spec(s, k) for k, s in enumerate(got)]
        assert [(s.kind, s.root, s.gsd) for s in specs] == want, args


@pytest.mark.parametrize("where", ["command line", "config"])
def test_bad_source_entries_are_named_by_key_and_value(where, tmp_path, capsys):
    entry = {"kind": "lovedaa", "root": str(tmp_path), "gsd": "fine", "clas_map": "x.yaml"}
    if where == "command line":
        args = ["--sources", json.dumps([entry])]
        label = "--sources[0]"
    else:
        config = tmp_path / "seg.yaml"
        config.write_text(yaml.safe_dump({"sources": [entry], "caption_gsd": 1.0}))
        args, label = ["--config", config], "sources[0]"
    code, _, err = cli(train_mod.main, [*args, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "Traceback" not in err and "expected a list (each SourceSpec)" not in err, err
    assert f"{label}.kind 'lovedaa' is not one of drone, loveda, openearthmap, folder (did you mean loveda?)" in err
    assert f"{label}.gsd 'fine' is invalid; expected a number > 0 or null" in err
    assert f"{label}: unknown key clas_map (did you mean class_map?); the keys are kind, root, gsd, class_map" in err
    assert not (tmp_path / "out").exists()


def test_a_malformed_sources_list_on_the_command_line_is_one_message(tmp_path, capsys):
    code, _, err = cli(train_mod.main, ["--sources", "[{kind: loveda, root: /data", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "is not a valid YAML/JSON list" in one_message(err)
    code, _, err = cli(train_mod.main, ["--sources", "[{kind: loveda}]", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "--sources[0]: root is missing; expected a path" in one_message(err)


def test_a_source_root_that_is_a_file_is_called_a_file(tmp_path):
    a_file = tmp_path / "Train.zip"
    a_file.write_bytes(b"PK")
    for kind in ("drone", "loveda", "openearthmap"):
        with pytest.raises(ConfigError, match=f"root {a_file} is a file, not a folder"):
            open_source(SourceSpec(kind, a_file), "aerial10")


def test_consensus_pool_above_the_training_images_is_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    model = tmp_path / "llm"
    model.mkdir()
    np.savez(model / "retrieval.npz", names=np.array(["a.jpg", "b.jpg", "c.jpg"]))
    monkeypatch.setattr(generate_mod, "Captioner", None)  # loading it would fail the test with a traceback
    comps = TESTS / "data" / "llm" / "compositions.jsonl"
    code, _, err = cli(generate_mod.main, ["--model", model, "--compositions", comps, "--out", tmp_path / "p.json",
                                           "--consensus", 3, "--consensus-pool", 1000], capsys)
    assert code == 2 and "--consensus-pool 1000 is more than the 3 training images" in one_message(err)
    assert "give at most 3" in err and not (tmp_path / "p.json").exists()


def test_captioner_refuses_a_pool_larger_than_its_index(tmp_path):
    cap = Captioner.__new__(Captioner)  # the check comes before any model call
    cap.model_dir, cap.index = tmp_path, ["a.jpg", "b.jpg"]
    with pytest.raises(ConfigError, match="pool 5 is more than the 2 training images"):
        cap.caption([{}], consensus=3, pool=5)


# ---------------------------------------------------------------- 3. tracebacks left: one message each
@pytest.mark.skipif(os.name != "posix", reason="a shell-script java")
def test_a_java_whose_ptb_tokenizer_fails_is_one_message(tmp_path, capsys, monkeypatch):
    """java -version works, the tokenizer does not (a JVM too old for the jar, a damaged jar...)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    java = bin_dir / "java"
    java.write_text("#!/bin/sh\n"
                    "if [ \"$1\" = -version ]; then echo 'openjdk version \"1.6.0\"' >&2; exit 0; fi\n"
                    "echo 'Exception in thread \"main\" java.lang.UnsupportedClassVersionError: "
                    "edu/stanford/nlp/process/PTBTokenizer : Unsupported major.minor version 52.0' >&2\n"
                    "echo '\tat java.lang.ClassLoader.defineClass1(Native Method)' >&2\nexit 1\n")
    java.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    eval_metrics._java_start_problem.cache_clear()
    try:
        code, _, err = cli(score_mod.main, ["--references", EVAL / "dataset_rsicd.json", "--predictions",
                                            EVAL / "sys_a.json", "--out", tmp_path / "s"], capsys)
    finally:
        eval_metrics._java_start_problem.cache_clear()
    assert code == 2 and "PTB tokenizer failed" in one_message(err)
    assert str(java) in err and "UnsupportedClassVersionError" in err and "put another java first on PATH" in err
    assert not (tmp_path / "s").exists()


@pytest.fixture
def app_folders(tmp_path, monkeypatch) -> list:
    """The app's model folders (their files need only exist for the checks), and no server start."""
    seg, llm = tmp_path / "seg", tmp_path / "llm"
    seg.mkdir()
    llm.mkdir()
    (seg / "model.pt").write_bytes(b"")

    def execve(*a):
        raise AssertionError("the server started")
    monkeypatch.setattr(app_main.os, "execve", execve)
    return ["--segmentation", seg, "--llm", llm, "--run-dir", "null"]


def test_app_address_that_does_not_resolve_is_one_message_before_the_url(app_folders, capsys):
    code, out, err = cli(app_main.main, [*app_folders, "--address", "no-such-host.invalid"], capsys)
    assert code == 2 and "--address no-such-host.invalid does not resolve" in one_message(err)
    assert "http://" not in out


def test_app_port_in_use_is_one_message_before_the_url(app_folders, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = cli(app_main.main, [*app_folders, "--address", "127.0.0.1", "--port", port], capsys)
    assert code == 2 and f"--port {port}: already in use on 127.0.0.1" in one_message(err)
    assert "choose another port" in err and "http://" not in out


def test_refused_encoder_weights_are_one_line_of_ours(tmp_path):
    weights = pickled_object(tmp_path / "encoder.pth")
    for build in (lambda: build_model({}, 2, weights), lambda: build_trunk("mobilenet_v2", 8, weights)):
        with pytest.raises(ConfigError) as e:
            build()
        msg = str(e.value)
        assert "\n" not in msg and "Please" not in msg and "file an issue" not in msg, msg
        assert "holds pickled Python objects (argparse.Namespace), not only tensors" in msg
        assert "torch.save(model.state_dict(), path)" in msg


def test_a_truncated_captioner_is_called_truncated(tmp_path):
    folder = tmp_path / "cnn"
    folder.mkdir()
    opts = CnnLstmOptions(image_size=32, attention_grid=2, feature_dim=8, embed_dim=8, hidden_dim=8, attention_dim=8)
    vocab = Vocabulary.build(["a pond near a river"], min_count=1)
    vocab.save(folder / VOCAB_FILE)
    torch.save(CnnLstm(opts, len(vocab)).state_dict(), folder / WEIGHTS_FILE)
    write_config(folder, "cnn-lstm", opts.to_dict(), {})
    assert load_captioner(folder, device="cpu").arch == "cnn-lstm"
    data = (folder / WEIGHTS_FILE).read_bytes()
    (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as e:
        load_captioner(folder, device="cpu")
    msg = str(e.value)
    assert "truncated or corrupt" in msg and "copy the model folder again, or train it again" in msg
    assert "do not fit" not in msg and "\n" not in msg


def test_caption_refuses_a_pool_above_the_training_images_before_the_models_load(tmp_path, capsys, monkeypatch):
    from pipeline import caption as caption_mod

    model = tmp_path / "llm"
    model.mkdir()
    np.savez(model / "retrieval.npz", names=np.array(["a.jpg", "b.jpg", "c.jpg"]))
    seg = tmp_path / "seg"
    seg.mkdir()
    (seg / "model.pt").write_bytes(b"")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(image)
    monkeypatch.setattr(caption_mod, "load_segmenter", None)  # loading would fail the test with a traceback
    code, _, err = cli(caption_mod.main, [image, "--segmentation", seg, "--llm", model, "--consensus", 3,
                                          "--consensus-pool", 1000], capsys, positional=("images",))
    assert code == 2 and "--consensus-pool 1000 is more than the 3 training images" in one_message(err)
    code, _, err = cli(caption_mod.main, [image, "--segmentation", seg, "--llm", model, "--consensus-pool", -1,
                                          "--num-beams", 0], capsys, positional=("images",))  # bounds: the types
    assert code == 2 and "--consensus-pool '-1' is invalid; expected an integer >= 0 (default: 0)" in err
    assert "--num-beams '0' is invalid; expected an integer >= 1 (default: 1)" in err
    with pytest.raises(ConfigError, match=r"^pipeline.caption: scale 0 is invalid; expected a number > 0"):
        caption_mod.main(images=[image], segmentation=seg, llm=model, scale=0)  # a direct call, checked alike
