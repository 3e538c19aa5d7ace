"""A non-editable install works from any folder: configs, class tables, class maps and the schema are package data.

The package is built from a copy of the sources (the clone stays clean) and installed with ``pip install --no-deps
--no-build-isolation --no-index`` into a fresh venv, offline. The venv sees this environment's dependencies (torch,
transformers, setuptools...) through a path file, but not its editable install of segcap (the ``.pth`` files of this
environment are not run there). Every command runs with its working directory outside the repository.

- ``test_installed_package_reads_its_own_files``: the modules come from the venv; a class table, a class map, the
  caption words, the schema and ``configs/...`` names load from the package; missing ones are named with where they
  were looked for; the packaged demo config passes pipeline.run's checks; ``bench.composition_speed --help`` starts.
- ``test_installed_demo_config_runs``: ``python -m pipeline.run --config configs/pipeline/synthetic.yaml``, the
  packaged demo config shrunk by flags to a tiny set and the template system, runs every stage it needs.

Both are in the default run: about 50 s together on 2 busy cores (the install itself is a few seconds).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from segcap.cli import load_yaml
from segcap.errors import ConfigError
from segcap.resources import INSTALL_ROOT, config_path, configs_dir, looked_for, shipped, shipped_name

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("segcap", "aerialdata", "segmentation", "composition", "llm", "evaluation", "synthetic", "captioners",
            "pipeline", "bench", "app")
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "MPLBACKEND": "Agg",
       "TOKENIZERS_PARALLELISM": "false", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}

# Run by the installed interpreter from outside the repository: where each thing comes from, as one JSON object.
PROBE = r'''
import importlib, json, sys
from pathlib import Path
mods = {m: importlib.import_module(m).__file__ for m in sys.argv[1].split(",")}
from aerialdata.classes import load_class_table
from aerialdata.labelled import load_class_map
from composition.config import DEFAULT_CONFIG_PATH, CompositionConfig, load_config
from composition.evidence import load_caption_words
from composition.schema import schema
from segcap.cli import load_yaml
from segcap.errors import ConfigError
from segcap.resources import config_path, configs_dir
out = {"modules": mods, "sys_path": sys.path, "configs_dir": str(configs_dir()),
       "tests": (importlib.util.find_spec("tests").origin if importlib.util.find_spec("tests") else None),
       "aerial10": load_class_table("aerial10").names, "seed10_path": str(config_path("configs/classes/seed10.yaml")),
       "loveda_map": load_class_map(None, "aerial10", kind="loveda").source,
       "caption_words": sorted(load_caption_words()), "schema": schema()["title"],
       "composition_default": load_config(DEFAULT_CONFIG_PATH) == CompositionConfig(),
       "demo": load_yaml("configs/pipeline/synthetic.yaml"), "demo_path": str(config_path("configs/pipeline/synthetic.yaml"))}
errors = {}
for what, fn in {"config": lambda: load_yaml("configs/pipeline/nope.yaml"),
                 "table": lambda: load_class_table("aerial11"),
                 "map": lambda: load_class_map("configs/classes/maps/nope.yaml", "aerial10")}.items():
    try:
        fn()
    except ConfigError as e:
        errors[what] = str(e)
out["errors"] = errors
# the packaged demo config passes every check of pipeline.run (its sections and the configs it names)
import pipeline.run as prun
from segcap.cli import parse
parsed = parse(prun.main, ["--config", "configs/pipeline/synthetic.yaml", "--from", "score"], aliases=prun.ALIASES)
options = {k: v for k, v in parsed.items() if k not in ("force", "from_stage", "only")}
run = prun.make_run(**options, sources=prun.section_sources(["--config", "configs/pipeline/synthetic.yaml"]))
out["demo_run"] = {"systems": list(run.systems), "llm_file": sorted(run.llm_file), "seg_file": sorted(run.segmentation_file)}
# pipeline.run's own defaults, <its parent folder>/configs/..., are the shipped files where no configs/ is beside it
from captioners.registry import ARCHS
from segcap.options import options_of
defaults = [options_of(prun.main)[k].default for k in ("segmentation_config", "composition_config", "llm_config")]
out["run_defaults"] = {str(p): [str(config_path(p)), sorted(load_yaml(p))]
                       for p in [*defaults, *(a.config for a in ARCHS.values())] if p}
print(json.dumps(out))
'''


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return {**env, **ENV}


def _run(cmd: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _setuptools_version() -> tuple[int, ...]:
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return ()
    return tuple(int(x) for x in re.findall(r"\d+", version)[:2])


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(venv python, its site-packages, a working folder outside the repository) of a fresh non-editable install."""
    if _setuptools_version() < (70, 1):  # the offline build uses this environment's setuptools (bdist_wheel built in)
        pytest.skip("needs setuptools>=70.1 in this environment for an offline build: pip install 'setuptools>=70.1'")
    tmp = tmp_path_factory.mktemp("install")
    # 1. a copy of what the wheel is built from, so that the build leaves no build/ or egg-info in the clone
    src = tmp / "src"
    for name in PACKAGES:
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    # 2. a fresh venv that sees this environment's site-packages (a path file: their .pth files do not run there)
    venv = tmp / "venv"
    r = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp)
    assert r.returncode == 0, r.stderr
    python = venv / "bin" / "python"
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp)
                   .stdout.strip())
    here = [*site.getsitepackages(), sysconfig.get_paths()["purelib"], site.getusersitepackages()]
    parents = [p for p in dict.fromkeys(here) if Path(p).is_dir()]
    (purelib / "parent_env.pth").write_text("\n".join(parents) + "\n", encoding="utf-8")
    # 3. pip install . (not editable), offline; --ignore-installed: never touch this environment's segcap
    r = _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
              "--ignore-installed", src], cwd=tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    work = tmp / "elsewhere"
    work.mkdir()
    return python, purelib, work


def test_installed_package_reads_its_own_files(installed):
    python, purelib, work = installed
    r = _run([python, "-c", PROBE, ",".join(PACKAGES + ("bench.reference_extractor",))], cwd=work)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])

    # every module, and the shipped configs, come from the venv; nothing from the repository
    for name, file in out["modules"].items():
        assert Path(file).is_relative_to(purelib), (name, file)
    assert Path(out["configs_dir"]) == purelib / "segcap" / "configs"
    assert str(REPO) not in out["sys_path"] and "" not in out["sys_path"][1:]
    assert out["tests"] is None or not Path(out["tests"]).is_relative_to(REPO)

    # class tables by name, a configs/... path, class maps, caption words, the schema, the composition defaults
    assert out["aerial10"][5] == "building" and len(out["aerial10"]) == 10
    assert Path(out["seed10_path"]) == purelib / "segcap" / "configs" / "classes" / "seed10.yaml"
    assert out["loveda_map"] == "loveda" and "water" in out["caption_words"]
    assert out["schema"] and out["composition_default"] is True
    assert out["demo"] == yaml.safe_load((REPO / "configs" / "pipeline" / "synthetic.yaml").read_text())
    assert Path(out["demo_path"]).is_relative_to(purelib)
    assert out["demo_run"]["systems"] == out["demo"]["systems"]
    assert out["demo_run"]["llm_file"] and out["demo_run"]["seg_file"]
    shipped = purelib / "segcap" / "configs"

    assert len(out["run_defaults"]) == 3 + 2
    for default, (found, keys) in out["run_defaults"].items():
        assert not (work / default).exists() and Path(found).is_relative_to(shipped) and keys, default

    # a missing config names what was looked for, and where
    assert f"{work / 'configs/pipeline/nope.yaml'} and {shipped / 'pipeline/nope.yaml'}" in out["errors"]["config"]
    assert "class table aerial11 not found" in out["errors"]["table"] and "aerial10" in out["errors"]["table"]
    assert "seed10" in out["errors"]["table"] and "caption_words" not in out["errors"]["table"]
    assert str(shipped / "classes" / "maps" / "nope.yaml") in out["errors"]["map"]

    # the benchmark starts from the installed package: bench no longer imports tests
    r = _run([python, "-m", "bench.composition_speed", "--help"], cwd=work)
    assert r.returncode == 0 and "--boxes-ab" in r.stdout, r.stderr[-2000:]


def test_installed_demo_config_runs(installed):
    python, _, work = installed
    tiny = {
        "synthetic": {"seed": 1, "drone_images": 4, "drone_size": [96, 64], "caption_images": 12, "caption_size": 64,
                      "categories": ["pond", "river", "forest"]},
        "segmentation": {"epochs": 1, "batch_size": 4, "crop_size": 32, "target_scale": 0.5,
                         "decoder_channels": [16, 8, 8, 8, 8], "samples": 0, "cache_images": True, "threads": 1},
        "llm": {"epochs": 1, "save_checkpoints": False, "threads": 1,
                "tiny_model": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                               "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 256}},
    }
    cmd = [python, "-m", "pipeline.run", "--config", "configs/pipeline/synthetic.yaml", "--run-dir", "run",
           "--data-root", "data", "--systems", "[template]", "--split", "val", "--num-beams", "1",
           "--consensus", "2", "--retrieval-k", "2", "--no-progress"]
    for name, section in tiny.items():
        cmd += [f"--{name}", json.dumps(section)]
    r = _run(cmd, cwd=work, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for f in ("segmentation/model.pt", "compositions/predicted.jsonl",
              "predictions/template.json", "scores/scores.json", "report.md"):
        assert (work / "run" / f).exists(), f
    config = yaml.safe_load((work / "run" / "segmentation" / "config.yaml").read_text())
    assert "aerial10" in json.dumps(config)


# ---------------------------------------------------------------- segcap.resources in this process (a clone)
def test_config_path_prefers_what_exists_then_the_shipped_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config_path("configs/llm/tiny.yaml") == shipped("llm", "tiny.yaml")  # no configs/ here: the shipped one
    assert config_path(INSTALL_ROOT / "configs" / "llm" / "tiny.yaml").is_file()
    (tmp_path / "configs" / "llm").mkdir(parents=True)
    (tmp_path / "configs" / "llm" / "tiny.yaml").write_text("epochs: 1\n")
    assert config_path("configs/llm/tiny.yaml") == Path("configs/llm/tiny.yaml")  # the user's own file wins
    for missing in ("mine.yaml", "configs/nope.yaml", "configs/../configs/llm/nope.yaml", tmp_path / "x" / "a.yaml"):
        assert config_path(missing) == Path(missing)  # stays missing, for its reader to report
    assert shipped_name("configs/../../etc/passwd") is None and shipped_name("/etc/configs/a.yaml") is None
    assert shipped_name(INSTALL_ROOT / "configs" / "classes" / "seed10.yaml") == Path("classes/seed10.yaml")
    assert looked_for("configs/nope.yaml") == (f"looked for {tmp_path / 'configs/nope.yaml'} and "
                                               f"{shipped('nope.yaml')} (shipped with segcap)")
    with pytest.raises(ConfigError, match=r"config file not found: mine.yaml; looked for .*mine.yaml; pass"):
        load_yaml("mine.yaml")


def test_repository_configs_is_the_shipped_folder():
    assert (REPO / "configs").resolve() == configs_dir().resolve() == (REPO / "segcap" / "configs").resolve()
    assert {p.stem for p in shipped("classes").glob("*.yaml")} >= {"seed10", "aerial10", "caption_words"}
