"""The one training protocol (segcap.training): output folder checks, the lock, --resume and its option rules, the
cleanup of a fresh run that fails before its first checkpoint; and captioners.train's exact --resume on accelerate."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from captioners import train as ctrain
from segcap.errors import ConfigError, FolderLockedError, OutputExistsError
from segcap.training import (
    STATE_DIR,
    OutputFolder,
    read_record,
    resume_changes,
    saved_state_options,
    state_folder,
    write_state,
)

HERE = Path(__file__).resolve().parent
CAPS = HERE / "data" / "captioners"
TINY_CNN = dict(image_size=32, attention_grid=4, feature_dim=16, embed_dim=16, hidden_dim=32, attention_dim=16,
                min_count=1, batch_size=4, progress=False, threads=1)


def _folder(out: Path, resume=False, overwrite=False, **kw) -> OutputFolder:
    rules = dict(saved=saved_state_options, free=("out", "threads", "resume", "overwrite"), trained_in=STATE_DIR,
                 marker=("run.json", STATE_DIR), accelerate_state=True)
    return OutputFolder(out, "test folder", "test output folder", "tests.tool", resume, overwrite, **{**rules, **kw})


def _state(out: Path, options: dict, name: str = STATE_DIR) -> None:
    (out / name).mkdir(parents=True)
    write_state(out / name, {"epoch": 1}, options)


# ---------------------------------------------------------------- the folder before any work
def test_a_fresh_run_refuses_a_folder_with_files_unless_overwrite_and_its_own(tmp_path):
    out = tmp_path / "run"
    _folder(out).check({})  # absent: fine
    out.mkdir()
    _folder(out).check({})  # empty: fine
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="test output folder already exists"):
        _folder(out).check({})
    assert _folder(out, overwrite=True).problems({}) == [
        f"--overwrite refuses to delete {out}: it was not written by tests.tool (no run.json or last); "
        "choose another --out"]
    (out / "run.json").write_text("{}")
    _folder(out, overwrite=True).check({})


def test_outputs_named_refuse_only_an_earlier_runs_files(tmp_path):
    out = tmp_path / "seg"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _folder(out, outputs=("model.pt",)).check({})  # other files are left alone
    (out / "model.pt").write_bytes(b"x")
    with pytest.raises(OutputExistsError):
        _folder(out, outputs=("model.pt",)).check({})


def test_resume_allows_the_free_options_and_refuses_the_others_naming_each(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match=r"--resume: nothing to resume in .* \(no last/training.json\); run without"):
        _folder(out, resume=True).check({})
    _state(out, {"lr": 0.1, "seed": 0, "threads": 2, "out": "a"})
    _folder(out, resume=True).check({"lr": 0.1, "seed": 0, "threads": 8, "out": "b"})  # threads and out may change
    with pytest.raises(ConfigError) as e:
        _folder(out, resume=True).check({"lr": 0.2, "seed": 1, "threads": 8})
    msg = str(e.value)
    assert f"--resume: {out / STATE_DIR} was trained with lr 0.1, now 0.2" in msg
    assert "seed 0, now 1" in msg and "threads" not in msg.split("(only")[0]
    assert "(only threads may change)" in msg


def test_resume_lets_an_option_grow_never_shrink(tmp_path):
    out = tmp_path / "run"
    _state(out, {"epochs": 2.0})
    grows = _folder(out, resume=True, grows=("epochs",))
    grows.check({"epochs": 3.0})
    assert "epochs 2.0, now 1.0 (a resumed run may train longer, not shorter)" in " ".join(grows.problems({"epochs": 1.0}))


def test_resume_finds_a_state_left_between_the_two_renames(tmp_path):
    out = tmp_path / "run"
    _state(out, {"lr": 0.1}, name=f"{STATE_DIR}.tmp")
    assert state_folder(out) == out / f"{STATE_DIR}.tmp"
    with _folder(out, resume=True).hold({"lr": 0.1}):
        assert (out / STATE_DIR / "training.json").is_file() and not (out / f"{STATE_DIR}.tmp").exists()


# ---------------------------------------------------------------- the run: lock, record, cleanup
@pytest.mark.parametrize("existed", [False, True])
def test_a_fresh_run_that_fails_before_its_first_checkpoint_leaves_nothing(existed, tmp_path):
    out = tmp_path / "run"
    if existed:
        out.mkdir()
        (out / "notes.txt").write_text("the user's")
    folder = _folder(out, outputs=("model.pt",))  # other files may be there (segmentation.train's rule)
    with pytest.raises(RuntimeError), folder.hold({"lr": 0.1}, has_checkpoint=lambda: False):
        folder.write_record({"lr": 0.1})
        (out / "half").mkdir()
        raise RuntimeError("failed in the first epoch")
    if existed:
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    else:
        assert list(tmp_path.iterdir()) == []  # no folder, no lock file


def test_a_run_with_a_checkpoint_keeps_it_when_it_fails(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), _folder(out).hold({}, has_checkpoint=lambda: True):
        _state(out, {})
        raise RuntimeError("epoch 2 failed")
    assert state_folder(out) == out / STATE_DIR


def test_overwrite_clears_the_earlier_run_and_a_resume_records_what_changed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"lr": 0.1, "threads": 2}))
    (out / "old.bin").write_text("earlier")
    folder = _folder(out, overwrite=True)
    with folder.hold({"lr": 0.1, "threads": 2}):
        assert not (out / "old.bin").exists()
        folder.write_record({"lr": 0.1, "threads": 2})
    _state(out, {"lr": 0.1, "threads": 2})
    resumed = _folder(out, resume=True)
    with resumed.hold({"lr": 0.1, "threads": 4}):
        resumed.write_record({"lr": 0.1, "threads": 4})
    record = read_record(out / "run.json")
    assert record["threads"] == 4 and record["resumed"][0]["changed"] == {"threads": [2, 4]}


def test_a_second_writer_is_refused_naming_the_first(tmp_path):
    out = tmp_path / "run"
    script = textwrap.dedent(f"""
        import sys, time
        from segcap.atomic import folder_lock
        with folder_lock({str(out)!r}, "test folder"):
            print("locked", flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "locked"
        with pytest.raises(FolderLockedError, match=f"is being written by process {p.pid}"):
            with _folder(out).hold({}):
                pass
    finally:
        p.kill()
        p.wait()
    with _folder(out).hold({}):  # the lock died with its process
        pass


# ---------------------------------------------------------------- captioners.train on accelerate: exact --resume
def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "model.pt", map_location="cpu", weights_only=True)


def test_captioners_resume_continues_exactly(tmp_path, monkeypatch):
    kw = dict(captions=CAPS, epochs=2, learning_rate=0.01, select="last", **TINY_CNN)
    whole = ctrain.main(out=tmp_path / "whole", **kw)

    real = ctrain.save_epoch

    def stop_after_the_first(r, acc, loop):
        real(r, acc, loop)
        raise KeyboardInterrupt  # killed once epoch 1 is saved

    monkeypatch.setattr(ctrain, "save_epoch", stop_after_the_first)
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        ctrain.main(out=out, **kw)
    assert state_folder(out) == out / STATE_DIR  # the saved epoch is kept for --resume
    with pytest.raises(ConfigError, match="was trained with learning_rate 0.01, now 0.02"):
        ctrain.main(out=out, resume=True, **{**kw, "learning_rate": 0.02})
    monkeypatch.setattr(ctrain, "save_epoch", real)
    ctrain.main(out=out, resume=True, **{**kw, "progress": True})  # progress may change (threads too, but they
    # change the order of float sums: not bit for bit)

    a, b = _weights(whole), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((f / "metrics.json").read_text()) for f in (whole, out))
    assert [(r["train_loss"], r["val_loss"]) for r in ma["epochs"]] == [(r["train_loss"], r["val_loss"])
                                                                         for r in mb["epochs"]]
    assert not (out / STATE_DIR).exists()  # the finished model folder holds the model only


def test_captioners_fresh_run_failing_in_its_first_epoch_leaves_nothing(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("broken in epoch 1")

    monkeypatch.setattr(ctrain, "_val_loss", broken)
    out = tmp_path / "model"
    with pytest.raises(RuntimeError):
        ctrain.main(captions=CAPS, out=out, epochs=1, **TINY_CNN)
    assert list(tmp_path.iterdir()) == []


def test_a_run_recorded_with_a_renamed_option_resumes():
    """num_threads / num_workers became threads / workers (issue 24): an option the earlier run recorded under a name
    that no longer exists is not a change; a recorded option that changed still is."""
    before = {"num_workers": 0, "num_threads": 2, "lr": 0.001}
    assert resume_changes(before, {"workers": 2, "threads": None, "lr": 0.001}) == []
    assert resume_changes(before, {"workers": 2, "lr": 0.01}) == ["lr 0.001, now 0.01"]
