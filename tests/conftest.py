"""Shared test set-up: offline, single-threaded torch, paths relative to this file."""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"
REPO = TESTS.parent
SHARED = REPO.parent / "shared"


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture(autouse=True)
def _gpu_skip(request):
    if request.node.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs CUDA")


@pytest.fixture
def stage_bodies(monkeypatch):
    """Replace the bodies of pipeline stages for one test: ``stage_bodies({"llm": fn, ...})`` with
    ``fn(run, fresh, commands) -> result``; the stages keep their options, outputs and upstream."""
    import dataclasses

    from pipeline.stages import STAGES

    def replace(bodies: dict) -> None:
        for name, fn in bodies.items():
            body = lambda run, opts, fresh, commands, fn=fn: fn(run, fresh, commands)  # noqa: E731
            monkeypatch.setitem(STAGES, name, dataclasses.replace(STAGES[name], run=body))

    return replace


@pytest.fixture
def run_options(tmp_path):
    """pipeline.run's options for a run under ``tmp_path`` (make_run fills in the others' defaults):
    ``prun.make_run(**run_options(scene_head=True))``."""
    return lambda **over: {"run_dir": tmp_path / "run", "data_root": tmp_path / "data", "progress": False, **over}
