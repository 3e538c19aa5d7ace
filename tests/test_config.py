"""One typed configuration path: every config under configs/ parses against its command, and flags, YAML files and
pipeline sections are refused alike (wrong type, invalid choice, unknown key), with exit code 2 and one message."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml
from transformers import SchedulerType

from aerialdata import prepare
from bench import evaluation_speed, segmentation_predict, segmentation_train, synthetic_speed
from captioners import train as captioners_train
from composition import extract, show
from evaluation import score
from llm import finetune, generate
from pipeline import caption
from pipeline import run as prun
from pipeline.stages.base import PipelineOptions, Run
from segcap.cli import parse, run
from segcap.errors import ConfigError
from segcap.options import (
    EMPTY,
    Group,
    NonNegativeInt,
    PositiveInt,
    check_options,
    checked,
    config_kwargs,
    hints_of,
    options_of,
)
from segmentation import predict, scene, train
from synthetic import generate as synth
from synthetic import grid

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# every YAML under configs/ (class tables aside) and the entry point it configures
COMMAND_OF = {
    "segmentation.yaml": train.main,
    "composition.yaml": extract.main,
    "evaluation.yaml": score.main,
    "llm/tiny.yaml": finetune.main,
    "llm/llama2-7b-qlora.yaml": finetune.main,
    "pipeline/synthetic.yaml": prun.main,
    "pipeline/rsicd.yaml": prun.main,
    "pipeline/ucm.yaml": prun.main,
    "pipeline/ucm-imagenet.yaml": prun.main,
    **{f"captioners/{name}.yaml": captioners_train.main
       for name in ("synthetic", "rsicd", "ucm", "flickr8k", "vit-gpt2", "vit-gpt2-tiny", "blip")},
}
ENTRY_POINTS = [synth.main, grid.main, train.main, predict.main, extract.main, show.main, finetune.main, generate.main,
                score.main, caption.main, prun.main, segmentation_train.main, evaluation_speed.main,
                synthetic_speed.main, segmentation_predict.main, scene.main]


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


def _exit_2(fn, args, capsys) -> str:
    """Run ``fn`` as the shell would; assert exit code 2 and return the stderr text."""
    with pytest.raises(SystemExit) as e:
        run(fn, args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    return err


# ---------------------------------------------------------------- every config parses against its command
def test_every_config_has_a_command():
    # class tables and class maps are data, checked by their own loaders (tests/test_core.py, tests/test_sources.py)
    found = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml")
             if p.relative_to(CONFIGS).parts[0] != "classes"}
    assert found == set(COMMAND_OF), "a config under configs/ is not checked against its command: add it here"


@pytest.mark.parametrize("name", sorted(COMMAND_OF))
def test_config_parses_against_its_command(name):
    fn = COMMAND_OF[name]
    kwargs = config_kwargs(fn, CONFIGS / name)
    params = options_of(fn)  # its parameters, a group's fields in place of the group
    assert kwargs and set(kwargs) <= set(params)
    # through the command line too, with what the file leaves required given as flags
    args = ["--config", str(CONFIGS / name)]
    for key, p in params.items():
        if p.default is EMPTY and key not in kwargs:
            args += [f"--{key}", f"{key}.x"]
    parsed = parse(fn, args)
    assert {k: parsed[k] for k in kwargs} == kwargs


@pytest.mark.parametrize("fn", ENTRY_POINTS, ids=lambda f: f.__module__)
def test_help_shows_the_docstring(fn, capsys):
    with pytest.raises(SystemExit) as e:
        parse(fn, ["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    if fn.__doc__:
        summary = fn.__doc__.strip().splitlines()[0].split(";")[0].split("(")[0].strip()
        assert " ".join(summary.split()[:5]) in " ".join(out.split())
    assert "--config" in out and "null" in out


# ---------------------------------------------------------------- each failure, from a YAML file and from a flag
@pytest.mark.parametrize("fn,key,value,expected", [
    (train.main, "loss", "dice", "expected one of ce, ce+dice"),
    (train.main, "schedule", "linear", "expected one of onecycle, cosine"),
    (finetune.main, "quantize", "fp4", "expected one of none, nf4, int8"),
    (finetune.main, "lr_scheduler", "cosine_annealing", "expected one of cosine, linear"),
    (predict.main, "device", "gpu", "expected one of auto, cpu, cuda"),
    (score.main, "split", "dev", "expected one of test, val, train, restval"),
])
def test_invalid_choice_is_refused_from_yaml_and_flag(tmp_path, capsys, fn, key, value, expected):
    cfg = _yaml(tmp_path, f"{key}: {value}\n")
    err = _exit_2(fn, ["--config", str(cfg)], capsys)
    assert f"{cfg}: {key} '{value}' is invalid; {expected}" in err
    err = _exit_2(fn, [f"--{key.replace('_', '-')}", value], capsys)
    assert f"command line: --{key.replace('_', '-')} '{value}' is invalid; {expected}" in err


@pytest.mark.parametrize("fn,key,value,expected", [
    (train.main, "epochs", "many", "expected an integer"),
    (train.main, "lr", "fast", "expected a number"),
    (extract.main, "min_region_pixels", "4.5", "expected an integer"),
    (finetune.main, "lora_target_modules", "q_proj", "expected a list"),
])
def test_wrong_type_is_refused(tmp_path, capsys, fn, key, value, expected):
    cfg = _yaml(tmp_path, f"{key}: {value}\n")
    err = _exit_2(fn, ["--config", str(cfg)], capsys)
    assert f"{cfg}: {key} " in err and expected in err
    if not expected.startswith("expected a list"):  # a flag's values always make a list
        err = _exit_2(fn, [f"--{key.replace('_', '-')}", value], capsys)
        assert f"command line: --{key.replace('_', '-')} '{value}' is invalid; {expected}" in err


def test_unknown_key_is_refused_with_the_valid_ones(tmp_path, capsys):
    cfg = _yaml(tmp_path, "los: ce\nepochs: 2\n")
    err = _exit_2(train.main, ["--config", str(cfg)], capsys)
    assert f"{cfg}: unknown option(s) los (did you mean loss?); valid options: data_root" in err
    err = _exit_2(train.main, ["--los", "ce"], capsys)
    assert "command line: unknown option(s) --los (did you mean --loss?); valid options: --data-root" in err


def test_every_problem_is_reported_at_once(tmp_path, capsys):
    cfg = _yaml(tmp_path, "loss: dice\nschedule: linear\n")
    err = _exit_2(train.main, ["--config", str(cfg), "--epochs", "x", "--bogus", "1"], capsys)
    assert err.startswith("error: 4 problems with the options:")
    for part in ("loss 'dice'", "schedule 'linear'", "--epochs 'x'", "unknown option(s) --bogus"):
        assert part in err


def test_subprocess_exit_2_and_one_line(tmp_path):
    cfg = _yaml(tmp_path, "max_dominant: three\n")
    r = subprocess.run([sys.executable, "-m", "composition.extract", "--config", str(cfg), "--masks", "m", "--out",
                        str(tmp_path / "o.jsonl")], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert r.stderr.strip() == f"error: {cfg}: max_dominant 'three' is invalid; expected an integer >= 1 (default: 3)"
    r = subprocess.run([sys.executable, "-m", "composition.extract", "--masks", "m", "--out", "o", "--workers", "two"],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2
    assert r.stderr.strip() == "error: command line: --workers 'two' is invalid; expected an integer >= 0 (default: 0)"


def test_help_from_the_shell_names_the_module_and_the_options():
    r = subprocess.run([sys.executable, "-m", "composition.show", "--help"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0
    assert r.stdout.startswith("usage: python -m composition.show")
    assert "Print one composition record as a table" in r.stdout
    assert "compositions JSON Lines file" in r.stdout and "--overwrite, --no-overwrite" in r.stdout


# ---------------------------------------------------------------- null clears an option
def test_null_clears_an_optional_option(tmp_path):
    cfg = _yaml(tmp_path, "eval_captions: null\nmax_steps: null\n")
    assert parse(train.main, ["--config", str(cfg)])["eval_captions"] is None
    base = _yaml(tmp_path, "eval_captions: data/synthetic/rsicd\n")
    assert parse(train.main, ["--config", str(base)])["eval_captions"] == Path("data/synthetic/rsicd")
    assert parse(train.main, ["--config", str(base), "--eval-captions", "null"])["eval_captions"] is None
    assert parse(score.main, ["--references", "r", "--out", "o", "--predictions", "null"])["predictions"] is None


def test_null_and_empty_are_refused_where_they_cannot_clear(tmp_path, capsys):
    cfg = _yaml(tmp_path, "loss: null\n")
    err = _exit_2(train.main, ["--config", str(cfg)], capsys)
    assert f"{cfg}: loss cannot be null; expected one of ce, ce+dice" in err
    err = _exit_2(train.main, ["--eval-captions", ""], capsys)
    assert "--eval-captions is an empty path; to clear it write --eval-captions null" in err


# ---------------------------------------------------------------- the pipeline's per-stage sections
def test_check_options_types_values_and_names_the_section():
    source = "configs/pipeline/synthetic.yaml, section segmentation"
    out = check_options(train.main, {"eval-captions": "data/x", "epochs": 2, "max_steps": None,
                                     "decoder_channels": [32, 16, 16, 8, 8]}, source)
    assert list(out.pop("decoder_channels")) == [32, 16, 16, 8, 8]
    assert out == {"eval_captions": Path("data/x"), "epochs": 2, "max_steps": None}
    with pytest.raises(ConfigError) as e:
        check_options(train.main, {"loss": "dice", "epoch": 3, "lr": "x"}, source)
    msg = str(e.value)
    assert msg.startswith("3 problems")
    assert f"{source}: loss 'dice' is invalid; expected one of ce, ce+dice" in msg
    assert f"{source}: unknown option(s) epoch (did you mean epochs?)" in msg and f"{source}: lr 'x'" in msg
    llm = check_options(finetune.main, {"tiny_model": {"hidden_size": 64}, "eval_split": "none"}, "s")
    assert llm == {"tiny_model": {"hidden_size": 64}, "eval_split": "none"}


def test_lr_scheduler_choices_are_transformers_schedulers():
    names = typing.get_args(typing.get_type_hints(finetune.main)["lr_scheduler"])
    assert "cosine" in names and set(names) <= {s.value for s in SchedulerType}


def test_flag_forms_of_the_entry_points():
    kw = parse(synth.main, ["--drone-size", "96", "64", "--no-progress", "--categories", "pond", "river"])
    assert kw["drone_size"] == (96, 64) and kw["progress"] is False and kw["categories"] == ["pond", "river"]
    kw = parse(caption.main, ["a.jpg", "b.png", "--segmentation", "s", "--llm", "l", "--explain"],
               positional=("images",))
    assert kw["images"] == [Path("a.jpg"), Path("b.png")] and kw["explain"] is True
    kw = parse(show.main, ["c.jsonl", "--index", "-1"], positional=("file",))
    assert kw["file"] == Path("c.jsonl") and kw["index"] == -1
    kw = parse(prun.main, ["--from", "score", "--force", "llm", "captions"], aliases=prun.ALIASES)
    assert kw["from_stage"] == "score" and kw["force"] == ["llm", "captions"]


# ---------------------------------------------------------------- bounds in the signature: one check for every source
@pytest.mark.parametrize("fn,required,key,value,expected", [
    (generate.main, {"model": "m", "compositions": "c", "out": "o"}, "num_beams", 0, "expected an integer >= 1 (default: 1)"),
    (train.main, {}, "val_fraction", 1.0, "expected a number in [0, 1) (default: 0.2)"),
    (train.main, {}, "threads", 0, "expected an integer >= 1 or null (default: null)"),
    (predict.main, {"checkpoint": "c", "images": "i", "out": "o"}, "workers", -1,
     "expected an integer >= 0 (default: 1)"),
    (extract.main, {"masks": "m", "out": "o"}, "surround_share", 0, "expected a number in (0, 1] (default: 0.75)"),
    (finetune.main, {"compositions": "c", "captions": "c", "out": "o"}, "learning_rate", -0.1,
     "expected a number > 0 (default: 0.001)"),
])
def test_a_bound_is_refused_from_yaml_flag_section_and_call(tmp_path, capsys, fn, required, key, value, expected):
    cfg = _yaml(tmp_path, f"{key}: {value}\n")
    err = _exit_2(fn, ["--config", str(cfg)], capsys)
    assert f"{cfg}: {key} {value!r} is invalid; {expected}" in err
    err = _exit_2(fn, [f"--{key.replace('_', '-')}", str(value)], capsys)
    assert f"command line: --{key.replace('_', '-')} '{value}' is invalid; {expected}" in err
    with pytest.raises(ConfigError, match=r"^section s: " + key):
        check_options(fn, {key: value}, "section s")
    with pytest.raises(ConfigError) as e:  # a direct call from Python: refused before the body runs
        fn(**required, **{key: value})
    assert str(e.value) == f"{fn.__module__}: {key} {value!r} is invalid; {expected}"


def test_a_bound_inside_a_list_of_mappings_is_named_by_its_place():
    with pytest.raises(ConfigError) as e:
        check_options(train.main, {"sources": [{"kind": "loveda", "root": "x", "gsd": -1}], "caption_gsd": 0}, "s")
    assert e.value.problems == ["s: sources[0].gsd -1 is invalid; expected a number > 0 or null",
                                "s: caption_gsd 0 is invalid; expected a number > 0 or null (default: null)"]


def test_bounded_values_come_back_as_plain_numbers(tmp_path):
    cfg = _yaml(tmp_path, "sources: [{kind: loveda, root: x, gsd: 0.3}]\ncaption_gsd: 1\n")
    kw = parse(train.main, ["--config", str(cfg), "--val-fraction", "0.5", "--threads", "2",
                            "--decoder-channels", "8", "8", "8", "8", "8"])
    assert type(kw["val_fraction"]) is float and type(kw["threads"]) is int and type(kw["caption_gsd"]) is float
    assert [type(c) for c in kw["decoder_channels"]] == [int] * 5 and type(kw["sources"][0].gsd) is float
    yaml.safe_dump({k: v for k, v in kw.items() if isinstance(v, int | float | tuple)})  # config.yaml records them


MINE = [synth.main, grid.main, train.main, predict.main, scene.main, extract.main, show.main, finetune.main,
        generate.main, score.main, prepare.main]


@pytest.mark.parametrize("fn", MINE, ids=lambda f: f.__module__)
def test_entry_points_are_checked_and_share_the_runtime_names(fn):
    assert getattr(fn, "__checked__", False), f"{fn.__module__}.main lacks @segcap.options.checked"
    hints = hints_of(fn)  # every option, a group's fields included
    assert not {"num_threads", "num_workers"} & set(hints), "the runtime options are threads and workers"
    if "threads" in hints:
        assert hints["threads"] == PositiveInt | None and options_of(fn)["threads"].default is None
    if "workers" in hints:
        assert hints["workers"] is NonNegativeInt


# ---------------------------------------------------------------- option groups: a dataclass is the one source
@dataclasses.dataclass(frozen=True)
class _Sizes(Group):
    """Sizes: how big things are.

    Attributes:
        side: the side in pixels.
        count: how many.
    """

    side: int = 32
    count: PositiveInt = 2


def _toy(out: Path, sizes: _Sizes = _Sizes(), seed: int = 0) -> dict:
    """A toy command.

    Args:
        out: where.
        seed: the seed.
    """
    return {"out": out, "sizes": sizes, "seed": seed}


def test_a_group_is_flat_flags_flat_or_nested_yaml_and_flat_keywords(tmp_path, capsys):
    assert list(options_of(_toy)) == ["out", "side", "count", "seed"]  # the fields, in the group's place
    (tmp_path / "flat.yaml").write_text("side: 64\ncount: 3\n")
    (tmp_path / "nested.yaml").write_text("sizes: {side: 64, count: 3}\n")
    for name in ("flat.yaml", "nested.yaml"):
        got = run(_toy, ["--config", str(tmp_path / name), "--out", "o", "--seed", "1"])
        assert got == {"out": Path("o"), "sizes": _Sizes(side=64, count=3), "seed": 1}
    assert run(_toy, ["--out", "o", "--count", "5"])["sizes"] == _Sizes(count=5)  # the rest: the field defaults
    with pytest.raises(SystemExit) as e:
        run(_toy, ["--out", "o", "--count", "0", "--sidee", "3"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--count '0' is invalid; expected an integer >= 1 (default: 2)" in err
    assert "--sidee (did you mean --side?)" in err
    with pytest.raises(SystemExit):
        parse(_toy, ["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "Sizes: how big things are: --side SIDE the side in pixels. (an integer; default: 32)" in out
    # from Python: the group object, or its fields as keywords, each checked like a flag
    toy = checked(_toy)
    assert toy("o", side=8) == {"out": "o", "sizes": _Sizes(side=8), "seed": 0}
    assert toy("o", sizes=_Sizes(side=8))["sizes"] == _Sizes(side=8)
    for call in (lambda: toy("o", count=0), lambda: toy("o", sizes=_Sizes(count=0))):
        with pytest.raises(ConfigError, match="count 0 is invalid; expected an integer >= 1"):
            call()
    with pytest.raises(TypeError, match="give sizes= or its fields"):
        toy("o", sizes=_Sizes(), side=8)


def test_an_option_named_in_two_places_is_refused():
    def twice(side: int = 1, sizes: _Sizes = _Sizes()) -> None:
        """Twice."""

    with pytest.raises(TypeError, match="option side is in two places"):
        options_of(twice)


def test_the_options_of_segmentation_train_and_pipeline_run_are_their_groups_fields():
    """Each option is written once: in its group's dataclass, which the command line, the YAML check, the record of
    a training and the pipeline's Run all read."""
    fields = [f.name for cls in (train.DataConfig, train.ModelConfig, train.OptimConfig, train.RunConfig)
              for f in dataclasses.fields(cls)]
    assert list(options_of(train.main)) == fields
    assert [p for p in inspect.signature(train.main.__wrapped__).parameters] == ["data", "model", "optim", "run"]
    pipeline_fields = [f.name for f in dataclasses.fields(PipelineOptions)]
    assert list(options_of(prun.main)) == [*pipeline_fields, "force", "from_stage", "only"]
    assert {f.name for f in dataclasses.fields(Run)} >= set(pipeline_fields)  # Run extends them, never repeats


def test_no_entry_point_keeps_the_old_runtime_names():
    """Every command's options, groups included: threads and workers, never num_threads or num_workers."""
    from app import __main__ as app_main
    from captioners import generate as captioners_generate
    from pipeline import archive

    for fn in {*MINE, *ENTRY_POINTS, captioners_train.main, captioners_generate.main, archive.main, app_main.main}:
        assert not {"num_threads", "num_workers"} & set(options_of(fn)), fn.__module__
