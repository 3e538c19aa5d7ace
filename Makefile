# segcap: `make demo` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python

# Nothing is downloaded at run time (no hub files, no update checks).
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export TOKENIZERS_PARALLELISM := false
export MPLBACKEND := Agg
export PYTHONUNBUFFERED := 1

.PHONY: setup demo demo-retrieval test test-slow test-ddp bench lint clean app

# One pip resolve installs torch, torchvision and everything else together, so pip cannot swap torch afterwards.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	@touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m pipeline.run --config configs/pipeline/synthetic.yaml

# The demo plus the chain with retrieval-augmented prompts (and consensus decoding) and the retrieval-only ablation,
# in the same run folder: after `make demo` only the new stages run (about 5 min more).
demo-retrieval: setup
	$(PY) -m pipeline.run --config configs/pipeline/synthetic.yaml \
		--systems $$($(PY) -m pipeline.systems --default --group retrieval)

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

# the two multi-process training tests (torchrun, 2 CPU processes), as CI runs them after `make test`
test-ddp: setup
	$(PY) -m pytest -m slow -k torchrun

# The web app on the demo's models (http://localhost:8501); python -m app --help for other models and ports.
app: setup
	$(PY) -m app

bench: setup
	$(PY) -m bench.all

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs .pytest_cache
