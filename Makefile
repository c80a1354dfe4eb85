PYTHON ?= python3
PIP = $(PYTHON) -m pip install -q --disable-pip-version-check

.PHONY: install install-dev demo test lint bench

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
install:
	$(PIP) torch==2.13.0
	$(PIP) -e ".[wandb,report]"

install-dev: install
	$(PIP) -e ".[dev,wandb,report,slurm]"

# The main job on the embedded default (tiny model, synthetic_email, PerCE): estimate -> train -> eval.
demo: install
	percontrast run

test: install-dev
	$(PYTHON) -m pytest -q tests

lint: install-dev
	ruff check src tests scripts
	ruff format --check src tests scripts

bench: install
	$(PYTHON) scripts/bench_train.py
