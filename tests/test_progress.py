"""segcap.progress: a redrawn bar on a terminal, one line per task in a log file; the entry points that use it, run as
a user runs them with stderr to a file (no carriage-return redraws, a few lines), and llm.finetune's Trainer bar."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import llm.finetune as ft
from segcap.progress import Progress, is_terminal

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MASKS = HERE / "data" / "composition" / "masks"  # 3 good masks and corrupt.png
LLM = HERE / "data" / "llm"
TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "max_position_embeddings": 128}
LLM_FAST = dict(compositions=LLM / "compositions.jsonl", captions=LLM / "rsicd" / "dataset_rsicd.json", tiny_model=TINY,
                tokenizer={"kind": "word", "vocab_size": 200}, batch_size=4, eval_batch_size=16, max_length=128,
                captions_per_image="sample", logging_steps=1, threads=1, save_checkpoints=False)


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as stderr does in an interactive shell."""

    def isatty(self) -> bool:
        return True


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    """Run an entry point as a user does, stderr to a pipe (what `make demo > log 2>&1` gives it).

    Bytes, decoded here: text mode would turn each carriage return into a newline and hide the redraws."""
    r = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO, capture_output=True, timeout=300)
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout.decode(), r.stderr.decode())


# ------------------------------------------------------------------ the helper
def test_terminal_gets_a_redrawn_bar():
    tty = Terminal()
    assert is_terminal(tty) and not is_terminal(io.StringIO())
    for _ in Progress(range(30), desc="masks", unit="mask", file=tty, mininterval=0):
        pass
    out = tty.getvalue()
    assert "\r" in out and "masks" in out and "30/30" in out
    assert out.count("\r") > 2  # redrawn in place as it goes


def test_log_file_gets_one_line_per_task():
    log = io.StringIO()
    for _ in Progress(range(500), desc="masks", unit="mask", file=log):
        pass
    with Progress(total=10, desc="epoch 3/5", unit="batch", file=log) as bar:
        for _ in range(10):
            bar.update()
            bar.set_postfix(loss=0.123456)
        bar.write("skipped: bad.png")
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert len(lines) == 3
    assert re.fullmatch(r"masks: 500/500 masks in \d+\.\d s", lines[0]), lines[0]
    assert lines[1] == "skipped: bad.png"  # a message prints at once, the summary when the task ends
    assert re.fullmatch(r"epoch 3/5: 10/10 batches in \d+\.\d s, loss 0\.1235", lines[2]), lines[2]


def test_log_line_without_total_stopped_and_disabled():
    log = io.StringIO()
    with pytest.raises(KeyError), Progress(desc="compositions", unit="mask", file=log) as bar:
        bar.update(4)
        raise KeyError("boom")
    assert re.fullmatch(r"compositions: 4 masks in \d+\.\d s \(stopped\)\n", log.getvalue()), log.getvalue()

    quiet = io.StringIO()
    with Progress(total=3, desc="x", enabled=False, file=quiet) as bar:
        bar.update(3)
        bar.write("skipped: y")  # messages still print
    for _ in Progress([1, 2], desc="z", enabled=False, file=quiet):
        pass
    assert quiet.getvalue() == "skipped: y\n"

    closed = io.StringIO()
    closed.close()
    assert not is_terminal(closed)


def test_terminal_message_above_the_bar():
    tty = Terminal()
    with Progress(total=2, desc="segment", unit="image", file=tty) as bar:
        bar.write("skipped: broken.jpg")
        bar.update(2)
    out = tty.getvalue()
    assert "skipped: broken.jpg\n" in out and "2/2" in out


# ------------------------------------------------------------------ entry points, stderr to a pipe
def test_composition_extract_logs_lines(tmp_path):
    r = _cli("composition.extract", "--masks", MASKS, "--out", tmp_path / "c.jsonl")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 3, lines  # the bad mask, the task, the result
    assert lines[0].startswith("skipped: ") and "corrupt.png" in lines[0]
    assert re.fullmatch(r"compositions: 4/4 masks in \d+\.\d s", lines[1]), lines[1]
    assert lines[2].startswith("wrote 3 records")


def test_synthetic_generate_logs_one_line(tmp_path):
    r = _cli("synthetic.generate", "--out", tmp_path / "s", "--drone-images", "2", "--caption-images", "12",
             "--drone-size", "96", "64")
    assert r.returncode == 0, r.stderr
    assert "\r" not in r.stderr
    assert re.fullmatch(r"synthetic: 14/14 images in \d+\.\d s", r.stderr.strip()), r.stderr


def test_llm_finetune_and_generate_log_lines(tmp_path):
    """No Trainer bar, no log dicts and no weight-shard bars in a log: one line per epoch with train loss, eval loss
    and seconds; then generation logs one line, without transformers' "Loading weights" bar."""
    opts = {k.replace("_", "-"): v for k, v in LLM_FAST.items() if k != "save_checkpoints"}
    args = [a for k, v in opts.items() for a in (f"--{k}", json.dumps(v) if isinstance(v, dict) else v)]
    r = _cli("llm.finetune", *args, "--epochs", "3", "--out", tmp_path / "lm")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\r" not in r.stderr and "\r" not in r.stdout
    assert "{'loss'" not in r.stdout + r.stderr  # the Trainer's PrinterCallback is off
    epochs = [line for line in r.stderr.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 3, r.stderr
    for i, line in enumerate(epochs, 1):
        assert re.fullmatch(rf"epoch {i}/3: 2 steps in \d+\.\d s, train loss \d+\.\d+, eval loss \d+\.\d+", line), line
    assert len(r.stderr.splitlines()) < 10, r.stderr  # a handful of lines, not one per step

    r = _cli("llm.generate", "--model", tmp_path / "lm", "--compositions", LLM_FAST["compositions"],
             "--captions", LLM_FAST["captions"], "--split", "test", "--batch-size", "1", "--out", tmp_path / "p.json")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\r" not in r.stderr and "Loading weights" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(r"captioning \(beams=1\): 2/2 batches in \d+\.\d s", lines[0]), lines


def test_llm_finetune_keeps_the_trainer_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ft, "is_terminal", lambda stream=None: True)
    ft.main(out=tmp_path / "lm", epochs=2, progress=True, **LLM_FAST)
    err = capsys.readouterr().err
    assert "\r" in err and "4/4" in err  # tqdm's bar over the 2 x 2 steps...
    assert not re.search(r"^epoch \d", err, re.M)  # ...and no epoch lines
