# The two set-up commands of the README: `make demo` and `make test`.
# Each builds the environment it needs in .venv/ from nothing but this repo.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The test environment pins the CPU build of torch (a local wheel on our machines);
# the package itself does not pin torch. Override on a GPU box: make test TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
# Keep wandb, datasets and the HF cache out of the home directory.
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

STAMP := $(VENV)/.installed

.PHONY: env test lint demo bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,eval]"
	# SAEBench without its declared torchvision (see pyproject's eval extra)
	$(PY) -m pip install -q --no-deps "sae-bench==0.6.0"
	touch $@

env: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

# ruff (lint + format check) and pyright (basic) over the whole package; configured in pyproject.toml
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/pyright

demo: $(STAMP)
	$(PY) -m sae_lens_ortho.evals.synthetic.run --out demo_out

bench: $(STAMP)
	$(PY) -m sae_lens_ortho.bench --out docs/performance.md

clean:
	rm -rf $(VENV) demo_out bench_out
