"""pipeline: stage planning, skipping, resume and digests (fast, with stand-in stages), option checks, baselines,
configs, bad input. The real stages on a tiny set are in test_pipeline_e2e.py."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from composition.health import health
from llm.retrieval import consensus_order
from pipeline import executor
from pipeline import run as prun
from pipeline.baselines import NearestNeighbour, template_caption
from pipeline.layout import files_digest
from pipeline.report import ratios
from pipeline.stages import STAGES as STAGE_TABLE
from pipeline.stages import base as stage_base
from pipeline.stages import data as data_stage
from pipeline.stages import llm as llm_stage
from segcap.cli import config_kwargs, parse
from segcap.errors import ConfigError, DatasetNotFoundError

STAGES = executor.names()

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


def test_nearest_consensus_chooses_among_the_neighbours_captions():
    """k = 2: the captions of both neighbours are pooled, and the one the pool agrees with most wins."""
    pond2 = {**POND, "image": "pond_b.jpg"}
    caps = [["a pond near trees", "a small pond near trees"], ["a pond near green trees", "a pond near trees"]]
    nn = NearestNeighbour([POND, pond2, RIVER], [*caps, ["a river"]], 10)
    assert nn.caption([POND], k=2) == ["a pond near trees"]
    assert nn.caption([RIVER], k=1) == ["a river"]


def test_consensus_caption():
    assert consensus_order(["a b c", "x y z", "a b d"])[0] in ("a b c", "a b d")
    assert consensus_order(["a b c", "x y z", "a b d"])[-1] == "x y z"
    assert consensus_order(["only one"]) == ["only one"]


# ---------------------------------------------------------------- stage driver
def _touch(path: Path) -> None:
    """Write a stand-in output: a file, or a file inside a folder (a path without a suffix)."""
    target = path if path.suffix else path / "out.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"{time.time_ns()}")


@pytest.fixture
def fake_run(tmp_path, monkeypatch, stage_bodies):
    """Stand-in stages that log (stage, fresh) and write their first output, so that their digest changes."""
    calls: list[str] = []
    log: list[tuple[str, bool]] = []

    def fake(name):
        def stage(run, fresh, commands):
            calls.append(name)
            log.append((name, fresh))
            if name == "llm" and getattr(stage, "fail_once", False):
                stage.fail_once = False
                raise RuntimeError("power cut")
            if not (name == "segmentation" and run.layout.checkpoint_given):
                _touch(STAGE_TABLE[name].outputs(run.layout)[0])
            commands.append(f"python -m {name}")
            return {"stage": name}
        return stage

    funcs = {s: fake(s) for s in STAGES}
    stage_bodies({s: (lambda run, fresh, commands, s=s: funcs[s](run, fresh, commands)) for s in STAGES})
    monkeypatch.setattr(prun, "input_problems", lambda run, stages=None: [])  # stand-in outputs are no real inputs
    cfg = dict(run_dir=tmp_path / "run", data_root=tmp_path / "data", progress=False)
    return calls, funcs, cfg, log


def after(stage: str) -> list[str]:
    """``stage`` and every later stage that reads its outputs: all but the end-to-end captioners, which read only
    the caption set."""
    return [s for s in STAGES[STAGES.index(stage):] if s != "captioners"]


def test_stages_run_once_then_skip(fake_run):
    calls, _, cfg, _ = fake_run
    rows = prun.main(**cfg)
    assert calls == list(STAGES) and all(r["status"] == "ran" for r in rows)
    calls.clear()
    rows = prun.main(**cfg)
    assert calls == [] and all(r["status"] == "done before" for r in rows)


def test_interrupted_run_resumes_at_the_failed_stage(fake_run):
    calls, funcs, cfg, _ = fake_run
    funcs["llm"].fail_once = True
    with pytest.raises(RuntimeError, match="power cut"):
        prun.main(**cfg)
    assert calls[-1] == "llm"
    calls.clear()
    prun.main(**cfg)
    assert calls == list(STAGES[STAGES.index("llm"):])


def test_force_reruns_the_stage_and_everything_that_reads_it(fake_run):
    calls, _, cfg, log = fake_run
    prun.main(**cfg)
    log.clear()
    prun.main(**cfg, force=["masks"])
    assert [n for n, _ in log] == after("masks") and all(fresh for _, fresh in log)
    calls.clear()
    prun.main(**cfg, from_stage="captions")
    assert calls == ["captions", "score", "report"]
    calls.clear()
    prun.main(**cfg, force=["report"])
    assert calls == ["report"]
    calls.clear()
    prun.main(**cfg, only="score")
    assert calls == ["score"]
    calls.clear()
    prun.main(**cfg)  # the report reads the scores just rewritten
    assert calls == ["report"]


def test_only_needs_earlier_stages(fake_run):
    cfg = fake_run[2]
    with pytest.raises(ConfigError, match="have not finished"):
        prun.main(**cfg, only="score")


def test_bad_options_listed_together(fake_run):
    cfg = fake_run[2]
    with pytest.raises(ConfigError) as e:
        prun.main(**cfg, force=["nope"], systems=("pipeline", "gpt"), num_beams=0, only="score",
                  llm={"quantize": "nf5"}, classes="seed11")
    msg = str(e.value)
    for part in ("unknown stage 'nope'", "unknown system 'gpt'", "num_beams", "only cannot",
                 "option llm: quantize 'nf5' is invalid; expected one of none, nf4, int8", "class table seed11"):
        assert part in msg, part
    assert not cfg["run_dir"].exists()  # nothing ran


def test_retrieval_and_consensus_options_checked_before_any_stage(fake_run):
    cfg = fake_run[2]
    with pytest.raises(ConfigError) as e:
        prun.main(**cfg, retrieval_k=0, retrieval_captions=0, consensus=1, llm={"retrieval_k": 2},
                  systems=("pipeline", "pipeline_rag", "rag_only", "pipeline_mbr"))
    msg = str(e.value)
    for part in ("retrieval_k 0 is invalid; expected an integer >= 1", "retrieval_captions 0 is invalid",
                 "consensus 1 is invalid; expected an integer >= 2",
                 "llm: retrieval_k 2 in option llm", "set retrieval_k at the top level"):
        assert part in msg, part
    assert not cfg["run_dir"].exists()


def test_each_llm_stage_trains_with_its_own_retrieval(fake_run, monkeypatch):
    """pipeline, oracle and blind never retrieve (whatever the llm config says); rag and rag_only use the pipeline's
    retrieval_k; a changed retrieval_k reruns only the retrieval stages (and what reads them)."""
    calls, funcs, cfg, _ = fake_run
    seen = {}

    @functools.wraps(prun.finetune_llm)  # the real signature: the options are checked as in a run
    def record(**kw):
        seen[Path(kw["out"]).name] = kw
        return kw["out"]

    monkeypatch.setattr(llm_stage, "finetune_llm", record)
    run = prun.make_run(run_dir=cfg["run_dir"], data_root=cfg["data_root"], captions_json="dataset_rsicd.json",
                        images_dir="RSICD_images", classes="aerial10", systems=("pipeline", "pipeline_rag", "rag_only"),
                        progress=False, retrieval_k=4, retrieval_captions=2)
    for stage in ("llm", "rag", "rag_only"):  # the real bodies (fake_run's stand-ins are in the table)
        llm_stage.run_llm(stage, run, llm_stage.llm_options(run, stage), True, [])
    assert seen["pipeline"]["retrieval_k"] == 0
    assert seen["pipeline_rag"]["retrieval_k"] == 4 and seen["pipeline_rag"]["retrieval_captions"] == 2
    assert seen["rag_only"]["retrieval_k"] == 4 and seen["rag_only"]["prompt_mode"] == "blind"
    assert seen["pipeline_rag"]["prompt_mode"] == "full"

    prun.main(**cfg, systems=("pipeline", "pipeline_rag", "rag_only"))
    calls.clear()
    prun.main(**cfg, systems=("pipeline", "pipeline_rag", "rag_only"), retrieval_k=2)
    assert calls == ["rag", "rag_only", "captions", "score", "report"]


def test_report_compares_the_pool_with_the_same_votes_without_the_llm():
    """pipeline_pool is set against nearest_consensus (the same neighbours' captions, no LLM), and counts as a chain
    system against nearest."""
    from pipeline.report import ratios

    scores = {"overall": {"pipeline": {"CIDEr": 2.0}, "pipeline_pool": {"CIDEr": 2.5}, "nearest": {"CIDEr": 2.1},
                          "nearest_consensus": {"CIDEr": 2.4}}}
    lines = "\n".join(ratios(scores))
    assert "best chain system (pipeline_pool) CIDEr / nearest CIDEr = 1.19" in lines
    assert "pipeline_pool CIDEr / nearest_consensus CIDEr = 1.04 (the same neighbours' captions; not clearly" in lines


def test_stamps_record_commands_and_digest(fake_run):
    cfg = fake_run[2]
    prun.main(**cfg)
    stamp = json.loads((cfg["run_dir"] / "stages" / "llm.json").read_text())
    assert stamp["stage"] == "llm" and stamp["seconds"] >= 0 and stamp["result"] == {"stage": "llm"}
    assert stamp["commands"] == ["python -m llm"] and len(stamp["digest"]) == 32


def test_as_command():
    cmd = stage_base.as_command("llm.generate", {"model": Path("m"), "num_beams": 3, "overwrite": True,
                                            "names": ["a", "b c"], "category": None, "strict": False,
                                            "tiny_model": {"hidden_size": 32}, "progress": True})
    assert cmd == ("python -m llm.generate --model m --num-beams 3 --overwrite --names a 'b c' --category null "
                   """--no-strict --tiny-model '{"hidden_size": 32}'""")


# ---------------------------------------------------------------- configs and CLIs
def test_weights_that_cannot_load_stop_the_run_before_any_stage(tmp_path, capsys):
    """A base model or encoder weights that cannot be loaded (absent, offline and not cached) fail in the option
    check, not when their stage starts after the segmentation training."""
    cfg = tmp_path / "p.yaml"
    cfg.write_text(f"run_dir: {tmp_path / 'run'}\nllm: {{base_model: {tmp_path / 'no-such-model'}}}\n"
                   "segmentation: {encoder_weights: imagenet}\n")
    with pytest.raises(SystemExit) as e:
        prun.cli(["--config", str(cfg)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "llm: base_model" in err and "no-such-model" in err
    assert "segmentation: encoder_weights imagenet" in err
    assert not (tmp_path / "run").exists()


def test_caption_cli_refuses_bad_input(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pipeline.caption", str(tmp_path / "none.jpg"), "--segmentation",
                        str(tmp_path), "--llm", str(tmp_path / "x")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert "image not found" in r.stderr and "no model.pt" in r.stderr and "not a folder" in r.stderr


def test_run_cli_missing_data_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        prun.cli(["--run-dir", str(tmp_path / "r"), "--data-root", str(tmp_path / "nodata"), "--no-generate",
                  "--no-progress"])
    assert e.value.code == 2 and "set generate: true" in capsys.readouterr().err


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
    """The entry's YAML, then what the pipeline sets (None clears a value), then the user's section, which wins;
    the merged options go through the entry point's typed check."""
    def entry(a: int = 0, b: str | None = "x", c: int = 0, d: int = 0) -> dict:
        """E.

        Args:
            a: a. b: b. c: c. d: d.
        """
        return {"a": a, "b": b, "c": c, "d": d}

    cfg = tmp_path / "e.yaml"
    cfg.write_text("a: 1\nb: from-config\nc: 1\n")
    commands: list[str] = []
    got = stage_base.call(commands, "s", entry, config=cfg, file_options=config_kwargs(entry, cfg), user={"c": 3},
                     b=None, c=2, d=2)
    assert got == {"a": 1, "b": None, "c": 3, "d": 2}
    assert commands == [f"python -m tests.test_pipeline --config {cfg} --b null --c 3 --d 2"]
    with pytest.raises(ConfigError, match="stage s .*unknown option.*e"):
        stage_base.call(commands, "s", entry, user={"e": 1})
    with pytest.raises(ConfigError, match="stage s .*: c 'many' is invalid; expected an integer"):
        stage_base.call(commands, "s", entry, user={"c": "many"})


def test_changed_options_rerun_the_stage_and_everything_downstream(fake_run, tmp_path):
    calls, _, cfg, log = fake_run
    seg = tmp_path / "seg.yaml"
    seg.write_text("epochs: 2\n")
    cfg["segmentation_config"] = seg
    prun.main(**cfg)
    calls.clear()
    prun.main(**cfg, num_beams=5)  # decoding only
    assert calls == ["captions", "score", "report"]
    calls.clear()
    seg.write_text("# the same options\nepochs: 2\n")  # the options count, not the file's comments
    prun.main(**cfg, num_beams=5)
    assert calls == []
    seg.write_text("epochs: 3\n")
    log.clear()
    prun.main(**cfg, num_beams=5)
    assert [n for n, _ in log] == after("segmentation") and all(fresh for _, fresh in log)
    stamp = json.loads((cfg["run_dir"] / "stages" / "segmentation.json").read_text())
    assert len(stamp["fingerprint"]) == 16 and not (cfg["run_dir"] / "stages" / "segmentation.started.json").exists()


def test_data_options_rerun_the_chain(fake_run):
    """The synthetic section is part of the data stage's fingerprint (seed, caption_images...)."""
    calls, _, cfg, _ = fake_run
    prun.main(**cfg, synthetic={"seed": 1})
    calls.clear()
    prun.main(**cfg, synthetic={"seed": 1})
    assert calls == []
    prun.main(**cfg, synthetic={"seed": 2})
    assert calls == list(STAGES)
    calls.clear()
    prun.main(**cfg, synthetic={"seed": 2, "caption_images": 60})
    assert calls == list(STAGES)


def test_a_stage_whose_outputs_did_not_change_leaves_the_rest(fake_run, monkeypatch):
    """Downstream stages follow the content of what they read: a rerun that writes nothing new reruns nothing."""
    calls, funcs, cfg, _ = fake_run
    prun.main(**cfg)

    def data_present(run, fresh, commands):  # like stage_data when the data is already there
        calls.append("data")
        return {"status": "present"}

    monkeypatch.setitem(funcs, "data", data_present)
    calls.clear()
    prun.main(**cfg, force=["data"])
    assert calls == ["data"]


def test_outputs_changed_on_disk_are_redone(fake_run):
    calls, _, cfg, log = fake_run
    prun.main(**cfg)
    (cfg["run_dir"] / "masks" / "out.txt").unlink()  # a mask deleted by hand
    calls.clear()
    prun.main(**cfg)
    assert calls == after("masks")


def test_interrupted_stage_resumes_only_with_the_same_options(fake_run):
    calls, funcs, cfg, log = fake_run
    funcs["llm"].fail_once = True
    with pytest.raises(RuntimeError, match="power cut"):
        prun.main(**cfg)
    assert log[-1] == ("llm", True)  # first run: nothing to resume
    log.clear()
    prun.main(**cfg)
    assert log[0] == ("llm", False)  # same options: the tool resumes its checkpoints
    funcs["llm"].fail_once = True
    with pytest.raises(RuntimeError, match="power cut"):
        prun.main(**cfg, llm={"epochs": 1})
    log.clear()
    prun.main(**cfg, llm={"epochs": 2})  # options changed since the interrupted attempt: afresh
    assert log[0] == ("llm", True)
    log.clear()
    prun.main(**cfg, llm={"epochs": 2}, force=["compositions"])  # forced stages run afresh, and what reads them
    assert log[:2] == [("compositions", True), ("llm", True)]


def test_stamps_without_fingerprint_are_redone(fake_run):
    calls, _, cfg, _ = fake_run
    prun.main(**cfg)
    stamp = cfg["run_dir"] / "stages" / "report.json"
    old = json.loads(stamp.read_text())
    del old["fingerprint"]  # written by an older segcap
    stamp.write_text(json.dumps(old))
    calls.clear()
    prun.main(**cfg)
    assert calls == ["report"]


def _checkpoint(folder: Path, metrics: dict | None = None) -> Path:
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"weights 1")
    (folder / "config.yaml").write_text("classes: aerial10\n")
    (folder / "metrics.json").write_text(json.dumps(metrics or {}))
    return folder


def test_replaced_checkpoint_weights_rerun_the_chain(fake_run, tmp_path):
    calls, _, cfg, _ = fake_run
    ckpt = _checkpoint(tmp_path / "ckpt")
    prun.main(**cfg, segmentation_checkpoint=ckpt)
    calls.clear()
    prun.main(**cfg, segmentation_checkpoint=ckpt)
    assert calls == []
    (ckpt / "model.pt").write_bytes(b"new weights")  # retrained in place, same size, even with an old time
    os.utime(ckpt / "model.pt", ns=(1, 2))
    prun.main(**cfg, segmentation_checkpoint=ckpt)
    assert calls == after("segmentation")



def test_segmentation_stamp_records_best_val_miou(tmp_path, run_options):
    ckpt = _checkpoint(tmp_path / "ckpt", {"best_val_miou": 0.42, "best_epoch": 3})
    run = prun.make_run(**run_options(segmentation_checkpoint=ckpt))
    assert executor.run_stage(run, "segmentation", True, [])["best_val_miou"] == 0.42
    with pytest.raises(ConfigError, match="has no config.yaml"):
        (ckpt / "config.yaml").unlink()
        prun.make_run(**run_options(segmentation_checkpoint=ckpt))


TINY_DATA = {"drone_images": 1, "drone_size": [64, 64], "caption_images": 3, "caption_size": 64,
             "categories": ["pond", "river", "forest"]}


def test_data_stage_writes_the_synthetic_sets_with_the_asked_options(tmp_path, run_options):
    def data(**over):
        commands: list[str] = []
        run = prun.make_run(**run_options(**over))
        return executor.run_stage(run, "data", True, commands)["status"], commands

    status, commands = data(synthetic={**TINY_DATA, "seed": 1})
    assert status == "generated" and commands[0].startswith("python -m synthetic.generate --out")
    assert data(synthetic={**TINY_DATA, "seed": 1}) == ("present", [])
    assert data(synthetic={**TINY_DATA, "seed": 2})[0] == "generated"  # other options: written again
    refs = json.loads((tmp_path / "data" / "rsicd" / "dataset_rsicd.json").read_text())
    assert refs["generator"]["seed"] == 2
    (tmp_path / "data" / data_stage.GENERATED).unlink()  # written by synthetic.generate itself, options unknown
    assert data(synthetic={**TINY_DATA, "seed": 2})[0] == "generated"
    assert data(synthetic={**TINY_DATA, "seed": 2}, generate=False) == ("present", [])

    # data the pipeline did not write is never replaced, and missing data is named
    refs["generator"] = {"name": "someone else"}
    (tmp_path / "data" / "rsicd" / "dataset_rsicd.json").write_text(json.dumps(refs))
    (tmp_path / "data" / data_stage.GENERATED).unlink()
    assert data(synthetic={**TINY_DATA, "seed": 3}) == ("present", [])
    (tmp_path / "data" / "rsicd" / "dataset_rsicd.json").unlink()
    with pytest.raises(DatasetNotFoundError, match="holds files that synthetic.generate did not write"):
        data(synthetic={**TINY_DATA, "seed": 3})
    with pytest.raises(DatasetNotFoundError, match="dataset_rsicd.json not found; .*set generate: true"):
        data(generate=False)


# ---------------------------------------------------------------- the pipeline's stage sections
BAD_SECTIONS = {
    "synthetic": {"sed": 1},  # a typo
    "segmentation": {"loss": "dice"},  # not a choice: ce, ce+dice
    "llm": {"epochs": "many"},  # not a number
}


def test_bad_stage_sections_exit_2_before_any_stage(fake_run, tmp_path, capsys):
    calls, _, cfg, _ = fake_run
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"run_dir": str(cfg["run_dir"]), "data_root": str(cfg["data_root"]),
                                    "progress": False, **BAD_SECTIONS}))
    with pytest.raises(SystemExit) as e:
        prun.cli(["--config", str(path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and calls == [] and not cfg["run_dir"].exists()
    assert f"{path}, section synthetic: unknown option(s) sed (did you mean seed?)" in err
    assert f"{path}, section segmentation: loss 'dice' is invalid; expected one of ce, ce+dice" in err
    assert f"{path}, section llm: epochs 'many' is invalid; expected a number" in err

    # the same section as a flag is named as such, and overrides the file's
    with pytest.raises(SystemExit) as e:
        prun.cli(["--config", str(path), "--llm", "{quantize: nf5}"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "command line, --llm: quantize 'nf5' is invalid" in err and "'many'" not in err


def test_captioner_entries_checked_with_the_rest_before_any_stage(fake_run, tmp_path, capsys):
    calls, _, cfg, _ = fake_run
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({
        "run_dir": str(cfg["run_dir"]), "data_root": str(cfg["data_root"]), "progress": False,
        "systems": ["pipeline", "cnn_lstm", "blip"],
        "captioners": {"cnn_lstm": {"arch": "blip", "epochs": "many"}, "blip": {"zero_shot": True},
                       "gpt4": {}}}))
    with pytest.raises(SystemExit) as e:
        prun.cli(["--config", str(path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and calls == [] and not cfg["run_dir"].exists()
    for part in (f"{path}, section captioners: unknown system 'gpt4'; the end-to-end systems are cnn_lstm",
                 "captioners.cnn_lstm: arch follows from the system's name (cnn-lstm)",
                 "captioners.cnn_lstm: epochs 'many' is invalid",
                 "captioners.blip: zero_shot needs a pretrained checkpoint"):
        assert part in err, part

    # a system not asked for is not checked, and one asked for starts from its default config
    run = prun.make_run(**{**cfg, "systems": ("pipeline", "cnn_lstm"), "captioners": {"blip": {"zero_shot": True}}})
    entry = run.captioners["cnn_lstm"]
    assert list(run.captioners) == ["cnn_lstm"] and Path(entry["config"]).name == "synthetic.yaml"
    assert entry["file"]["epochs"] >= 1 and entry["options"] == {} and not entry["zero_shot"]



def test_captioner_weights_that_cannot_load_stop_the_run_before_any_stage(fake_run, tmp_path, monkeypatch, capsys):
    """configs/captioners/rsicd.yaml asks for torchvision's ResNet-50 weights: offline and not in torch's cache, the
    run stops before its first stage, naming the entry and what to download."""
    calls, _, cfg, _ = fake_run
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as e:
        prun.main(**cfg, systems=("pipeline", "cnn_lstm"),
                  captioners={"cnn_lstm": {"config": str(REPO / "configs" / "captioners" / "rsicd.yaml")}})
    msg = str(e.value)
    assert "cnn_lstm: encoder_weights IMAGENET1K_V2: torchvision's resnet50 weights" in msg and "HF_HUB_OFFLINE" in msg
    assert calls == [] and not cfg["run_dir"].exists()


def test_bad_entry_config_named_before_any_stage(fake_run, tmp_path):
    calls, _, cfg, _ = fake_run
    llm_cfg = tmp_path / "llm.yaml"
    llm_cfg.write_text("precision: fp64\n")
    with pytest.raises(ConfigError, match=f"llm_config: {llm_cfg}: precision 'fp64' is invalid"):
        prun.main(**cfg, llm_config=llm_cfg)
    assert calls == []


# ---------------------------------------------------------------- digests
def test_digest_follows_content_names_and_times(tmp_path):
    folder = tmp_path / "masks"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"abcd")
    before = files_digest([folder])
    assert files_digest([folder]) == before
    st = (folder / "a.png").stat()
    (folder / "a.png").write_bytes(b"abce")  # same size, same time: only the bytes differ
    os.utime(folder / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert files_digest([folder]) != before
    (folder / "a.png").write_bytes(b"abcd")
    os.utime(folder / "a.png", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert files_digest([folder]) == before
    (folder / "a.png").rename(folder / "b.png")
    assert files_digest([folder]) != before
    assert files_digest([tmp_path / "none"]) != files_digest([tmp_path / "none2"]) != files_digest([folder])
    (folder / "checkpoints").mkdir()
    (folder / "checkpoints" / "state.bin").write_bytes(b"x")
    assert files_digest([folder], skip=("checkpoints",)) != files_digest([folder])


def test_digest_is_cheap(tmp_path):
    """A folder of 1,000 small masks and a 40 MB weights file (hashed by samples) in well under 2 s."""
    rng = np.random.default_rng(0)
    masks = tmp_path / "masks"
    masks.mkdir()
    for i in range(1000):
        (masks / f"{i:04d}.png").write_bytes(rng.bytes(3000))
    big = tmp_path / "model.pt"
    big.write_bytes(rng.bytes(40 << 20))
    t0 = time.perf_counter()
    first = files_digest([masks, big])
    assert time.perf_counter() - t0 < 2.0
    with open(big, "r+b") as f:  # a change in a sampled region of a big file is seen
        f.seek(10)
        f.write(b"changed")
    assert files_digest([masks, big]) != first


# ---------------------------------------------------------------- configs and CLIs
@pytest.mark.parametrize("name", ["synthetic.yaml", "rsicd.yaml"])
def test_pipeline_configs_parse_and_their_sections_check(name, tmp_path, monkeypatch):
    # the model paths of rsicd.yaml are not on this machine: their checks have their own tests (test_pretrained.py)
    monkeypatch.setattr(prun, "base_model_problems", lambda base_model: [])
    monkeypatch.setattr(prun, "encoder_weights_problems", lambda weights: [])
    monkeypatch.setattr(prun, "captioner_weights_problems", lambda encoder, weights: [])
    path = REPO / "configs" / "pipeline" / name
    parsed = parse(prun.main, ["--config", str(path), "--from", "score"], aliases=prun.ALIASES)
    assert parsed["from_stage"] == "score" and parsed["run_dir"]
    options = {k: v for k, v in parsed.items() if k not in ("force", "from_stage", "only")}
    run = prun.make_run(**options, sources=prun.section_sources(["--config", str(path)]))
    assert run.systems == tuple(parsed["systems"]) and run.llm_file and run.segmentation_file


def test_ratios_name_the_best_chain_system_and_the_ablation():
    cider = {"pipeline": 1.9, "pipeline_beam3": 2.2, "pipeline_rag": 2.0, "rag_only": 1.6, "nearest": 2.0,
             "nearest_consensus": 2.4, "oracle": 2.0, "blind": 0.2}
    lines = ratios({"overall": {k: {"CIDEr": v} for k, v in cider.items()}})
    assert "best chain system (pipeline_beam3) CIDEr / nearest CIDEr = 1.10 (target >= 1.05)" in lines
    assert "best chain system (pipeline_beam3) CIDEr / nearest_consensus CIDEr = 0.92" in lines
    assert any(x.startswith("rag_only CIDEr / pipeline_rag CIDEr = 0.80 (clearly below 1") for x in lines)
    cider["rag_only"] = 2.0
    lines = ratios({"overall": {k: {"CIDEr": v} for k, v in cider.items()}})
    assert any(x.startswith("rag_only CIDEr / pipeline_rag CIDEr = 1.00 (not clearly below 1") for x in lines)
