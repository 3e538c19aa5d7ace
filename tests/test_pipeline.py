"""pipeline: stage planning, skipping and resume (fast, with stand-in stages), baselines, configs, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from composition.health import health
from pipeline import run as prun
from pipeline.baselines import NearestNeighbour, _consensus, template_caption
from segcap.cli import config_kwargs, parse
from segcap.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _rec(image: str, classes: list[tuple], relations: list[tuple] = ()) -> dict:
    """A composition record from (id, name, percent, regions, elongation, (cx, cy)) tuples."""
    return {
        "schema": "segcap.composition/1", "image": image, "width": 224, "height": 224,
        "classes": [{"id": i, "name": n, "percent": p, "center": list(c), "radius": 0.2, "centroid": list(c),
                     "regions": r, "largest_region_percent": p, "bbox": [0, 0, 1, 1], "elongation": e,
                     "position": "center"} for i, n, p, r, e, c in classes],
        "relations": [{"subject": s, "relation": rel, "object": o} for s, rel, o in relations],
    }


POND = _rec("pond_1.jpg", [(4, "vegetation", 70.0, 1, 1.2, (0.5, 0.5)), (3, "water", 20.0, 1, 1.4, (0.5, 0.5)),
                           (5, "building", 10.0, 6, 1.5, (0.2, 0.3))],
            [("water", "surrounded by", "vegetation"), ("building", "above left of", "vegetation")])
RIVER = _rec("river_1.jpg", [(4, "vegetation", 60.0, 2, 1.1, (0.5, 0.5)), (3, "water", 40.0, 1, 8.0, (0.5, 0.5))],
             [("water", "on", "vegetation")])


# ---------------------------------------------------------------- baselines
def test_template_caption_says_what_the_record_says():
    assert template_caption(POND) == "a pond is surrounded by green trees with many buildings ."
    assert "river" in template_caption(RIVER)
    only = _rec("x.jpg", [(0, "unlabeled", 100.0, 1, 1.0, (0.5, 0.5))])
    assert template_caption(only) == "an aerial image with nothing recognisable ."
    for word in ("car", "building", "road"):
        assert word not in template_caption(RIVER)


def test_nearest_neighbour_returns_the_closest_training_caption():
    nn = NearestNeighbour([POND, RIVER], [["pond caption a", "pond caption a", "other"], ["river caption"]], 10)
    assert nn.caption([RIVER, POND]) == ["river caption", "pond caption a"]


def test_consensus_caption():
    assert _consensus(["a b c", "x y z", "a b d"]) in ("a b c", "a b d")
    assert _consensus(["only one"]) == "only one"


# ---------------------------------------------------------------- stage driver
@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    calls: list[str] = []

    def fake(name):
        def stage(run):
            calls.append(name)
            if name == "llm" and getattr(stage, "fail_once", False):
                stage.fail_once = False
                raise RuntimeError("power cut")
            return {"stage": name}
        return stage

    funcs = {s: fake(s) for s in prun.STAGES}
    monkeypatch.setattr(prun, "STAGE_FUNCS", funcs)
    cfg = dict(run_dir=tmp_path / "run", data_root=tmp_path / "data", progress=False)
    return calls, funcs, cfg


def test_stages_run_once_then_skip(fake_run):
    calls, _, cfg = fake_run
    rows = prun.main(**cfg)
    assert calls == list(prun.STAGES) and all(r["status"] == "ran" for r in rows)
    calls.clear()
    rows = prun.main(**cfg)
    assert calls == [] and all(r["status"] == "done before" for r in rows)


def test_interrupted_run_resumes_at_the_failed_stage(fake_run):
    calls, funcs, cfg = fake_run
    funcs["llm"].fail_once = True
    with pytest.raises(RuntimeError, match="power cut"):
        prun.main(**cfg)
    assert calls[-1] == "llm"
    calls.clear()
    prun.main(**cfg)
    assert calls == list(prun.STAGES[prun.STAGES.index("llm"):])


def test_force_from_and_only(fake_run):
    calls, _, cfg = fake_run
    prun.main(**cfg)
    calls.clear()
    prun.main(**cfg, force=["masks"])
    assert calls == ["masks"]
    calls.clear()
    prun.main(**cfg, from_stage="captions")
    assert calls == ["captions", "score", "report"]
    calls.clear()
    prun.main(**cfg, only="score")
    assert calls == ["score"]


def test_only_needs_earlier_stages(fake_run):
    _, _, cfg = fake_run
    with pytest.raises(ConfigError, match="have not finished"):
        prun.main(**cfg, only="score")


def test_bad_options_listed_together(fake_run):
    _, _, cfg = fake_run
    with pytest.raises(ConfigError) as e:
        prun.main(**cfg, force=["nope"], systems=("pipeline", "gpt"), num_beams=0, only="score")
    msg = str(e.value)
    assert "unknown stage 'nope'" in msg and "unknown system 'gpt'" in msg and "num_beams" in msg and "only" in msg


def test_stamps_record_commands(fake_run, tmp_path):
    _, _, cfg = fake_run
    prun.main(**cfg)
    stamp = json.loads((cfg["run_dir"] / "stages" / "llm.json").read_text())
    assert stamp["stage"] == "llm" and stamp["seconds"] >= 0 and stamp["result"] == {"stage": "llm"}


def test_as_command():
    cmd = prun._as_command("llm.generate", {"model": Path("m"), "num_beams": 3, "overwrite": True,
                                            "names": ["a", "b"], "category": None, "strict": False})
    assert cmd == "python -m llm.generate --model m --num-beams 3 --overwrite --names a b --no-strict"


# ---------------------------------------------------------------- configs and CLIs
@pytest.mark.parametrize("name", ["synthetic.yaml", "rsicd.yaml"])
def test_pipeline_configs_parse(name):

    path = REPO / "configs" / "pipeline" / name
    kwargs = config_kwargs(prun.main, path)
    assert kwargs["run_dir"]
    parsed = parse(prun.main, ["--config", str(path), "--from", "score"], aliases=prun.ALIASES)
    assert parsed["from_stage"] == "score" and parsed["systems"] == kwargs["systems"]


def test_caption_cli_refuses_bad_input(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.caption", str(tmp_path / "none.jpg"), "--segmentation",
                        str(tmp_path), "--llm", str(tmp_path / "x")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert "image not found" in r.stderr and "no model.pt" in r.stderr and "not a folder" in r.stderr


def test_run_cli_missing_data_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.run", "--run-dir", str(tmp_path / "r"), "--data-root",
                        str(tmp_path / "nodata"), "--no-generate", "--no-progress"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "set generate: true" in r.stderr


def test_template_on_random_records_never_crashes():
    rng = np.random.default_rng(0)
    names = ["unlabeled", "artificial surface", "natural surface", "water", "vegetation", "building"]
    for _ in range(50):
        k = int(rng.integers(1, len(names)))
        ids = sorted(rng.choice(len(names), k, replace=False))
        pct = rng.dirichlet(np.ones(k)) * 100
        rec = _rec("x.jpg", sorted([(int(i), names[i], float(p), int(rng.integers(1, 9)), float(rng.uniform(1, 9)),
                                     (0.5, 0.5)) for i, p in zip(ids, pct, strict=True)], key=lambda c: -c[2]))
        cap = template_caption(rec)
        assert cap.endswith(" .") and len(cap.split()) >= 3


def test_composition_health_counts_diversity():

    h = health([POND, POND, RIVER])
    assert h["images"] == 3 and h["distinct prompts"] == 2 and h["single-class records"] == 0
    assert h["classes per record"] == round((3 + 3 + 2) / 3, 2)
    assert h["most common largest class"] == "vegetation (100%)"
    assert health([]) == {"images": 0}


def test_call_layers_config_then_pipeline_then_user(tmp_path):
    """The entry's YAML, then what the pipeline sets (None clears a value), then the user's section, which wins."""
    def entry(a: int = 0, b: str | None = "x", c: int = 0, d: int = 0) -> dict:
        """E.

        Args:
            a: a. b: b. c: c. d: d.
        """
        return {"a": a, "b": b, "c": c, "d": d}

    cfg = tmp_path / "e.yaml"
    cfg.write_text("a: 1\nb: from-config\nc: 1\n")
    run = prun.Run.__new__(prun.Run)
    run.commands = {}
    got = prun._call(run, "s", entry, config=cfg, user={"c": 3}, b=None, c=2, d=2)
    assert got == {"a": 1, "b": None, "c": 3, "d": 2}
    with pytest.raises(ConfigError, match="does not take e"):
        prun._call(run, "s", entry, user={"e": 1})


@pytest.fixture
def fresh_log(fake_run, monkeypatch):
    """Like fake_run, but each stage also logs whether it ran afresh (replacing outputs) or resumed."""
    calls, funcs, cfg = fake_run
    log: list[tuple[str, bool]] = []
    for name, fn in list(funcs.items()):
        def stage(run, fn=fn, name=name):
            log.append((name, run.fresh))
            return fn(run)
        stage.__dict__ = fn.__dict__  # fail_once is read from the inner function
        funcs[name] = stage
    return calls, funcs, cfg, log


def test_changed_options_rerun_the_stage_and_everything_downstream(fresh_log, tmp_path):
    calls, _, cfg, log = fresh_log
    seg = tmp_path / "seg.yaml"
    seg.write_text("epochs: 2\n")
    cfg["segmentation_config"] = seg
    prun.main(**cfg)
    calls.clear()
    prun.main(**cfg, num_beams=5)  # decoding only
    assert calls == ["captions", "score", "report"]
    calls.clear()
    prun.main(**cfg, num_beams=5)
    assert calls == []
    seg.write_text("epochs: 3\n")  # the file's bytes, not its name, count
    log.clear()
    prun.main(**cfg, num_beams=5)
    assert [n for n, _ in log] == list(prun.STAGES[1:]) and all(fresh for _, fresh in log)
    stamp = json.loads((cfg["run_dir"] / "stages" / "segmentation.json").read_text())
    assert len(stamp["fingerprint"]) == 16 and not (cfg["run_dir"] / "stages" / "segmentation.started.json").exists()


def test_interrupted_stage_resumes_only_with_the_same_options(fresh_log):
    calls, funcs, cfg, log = fresh_log
    funcs["llm"].fail_once = True
    with pytest.raises(RuntimeError, match="power cut"):
        prun.main(**cfg)
    assert log[-1] == ("llm", True)  # first run: nothing to resume
    log.clear()
    prun.main(**cfg)
    assert log[0] == ("llm", False)  # same options: the tool resumes its checkpoints
    funcs["llm"].fail_once = True
    prun.main(**cfg, force=["compositions"])  # forced stages run afresh, and only they
    assert calls[-1] == "compositions" and log[-1] == ("compositions", True)
    with pytest.raises(RuntimeError, match="power cut"):
        prun.main(**cfg, llm={"epochs": 1})
    log.clear()
    prun.main(**cfg, llm={"epochs": 2})  # options changed since the interrupted attempt: afresh
    assert log[0] == ("llm", True)


def test_stamps_without_fingerprint_are_redone(fake_run):
    calls, _, cfg = fake_run
    prun.main(**cfg)
    stamp = cfg["run_dir"] / "stages" / "masks.json"
    old = json.loads(stamp.read_text())
    del old["fingerprint"]  # written by an older segcap
    stamp.write_text(json.dumps(old))
    calls.clear()
    prun.main(**cfg)
    assert calls == ["masks"]


def test_replaced_checkpoint_weights_rerun_the_chain(fake_run, tmp_path):

    calls, _, cfg = fake_run
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / "model.pt").write_bytes(b"weights 1")
    prun.main(**cfg, segmentation_checkpoint=ckpt)
    calls.clear()
    prun.main(**cfg, segmentation_checkpoint=ckpt)
    assert calls == []
    (ckpt / "model.pt").write_bytes(b"new weights")  # retrained in place
    os.utime(ckpt / "model.pt", ns=(1, 2))
    prun.main(**cfg, segmentation_checkpoint=ckpt)
    assert calls == list(prun.STAGES[1:])
