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

.PHONY: env test lint demo bench bench-stability bench-gpu synthbench-gpu gpu-wheels clean

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

# SynthSAEBench's CPU proxy (docs/synthbench.md), seed 0: topk, batchtopk, matryoshka_batchtopk and every named recipe
# from the same init and batches, two worker processes; a rerun (or a rerun after Ctrl-C) skips finished arms.
# DEMO_ARGS="--seeds 0 1 2" for paired standard errors.
DEMO_ARGS ?= --seeds 0
demo: $(STAMP)
	$(PY) -m sae_lens_ortho.evals.synthetic.synthbench_cli --config proxy --jobs 2 --out demo_out $(DEMO_ARGS)

# Every table into bench_out/performance.md (docs/performance.md is curated: copy the tables wanted there)
BENCH_ARGS ?= --size cpu --threads 1 --cpu-sort torch
bench: $(STAMP)
	$(PY) -m sae_lens_ortho.bench --out bench_out/performance.md $(BENCH_ARGS)

# The stability check (docs/performance.md's stability block): the CPU step table twice, back to back, in fresh
# processes, single-threaded, the CPU sort fixed; fails when two ratios differ by more than 0.03 (time) or 0.01
# (peak memory). Run it on a quiet machine: 27 min on a quiet 2-core Intel VM (2026-12-03; 73 min on an AMD one).
BENCH_STABILITY_ARGS ?= --size cpu --threads 1 --cpu-sort torch --ci-width 0.03 --max-repeats 31
bench-stability: $(STAMP)
	$(PY) -m sae_lens_ortho.bench.stability --out docs/performance.md -- $(BENCH_STABILITY_ARGS)

# The GPU run (sae_lens_ortho/bench/gpu.py; < 8 min on one H200) with the GPU machine's own python3: that
# machine reaches no registry, so the packages its image lacks travel as wheels in .whl/ (`make gpu-wheels`
# here, then carry .whl). Everything lands in BENCH_GPU_OUT.
GPU_PYTHON ?= python3
BENCH_GPU_OUT ?= bench_out/gpu
BENCH_GPU_ARGS ?=
bench-gpu:
	if [ -d .whl ]; then $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
		--upgrade --target /tmp/gpu-site .whl/*.whl; fi
	PYTHONPATH=/tmp/gpu-site:$(CURDIR) PYTHONUNBUFFERED=1 $(GPU_PYTHON) -m sae_lens_ortho.bench.gpu --out $(BENCH_GPU_OUT) \
		$(BENCH_GPU_ARGS)

# SynthSAEBench-16k on the lent GPU in < 8 min (sae_lens_ortho/evals/synthetic/gpu.py): measures steps/s, picks the
# budget that fits, trains the candidate, its base, BatchTopK and Matryoshka from the same init and batches.
SYNTHBENCH_GPU_OUT ?= synthbench_gpu
SYNTHBENCH_GPU_ARGS ?=
synthbench-gpu:
	if [ -d .whl ]; then $(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
		--upgrade --target /tmp/gpu-site .whl/*.whl; fi
	PYTHONPATH=/tmp/gpu-site:$(CURDIR) PYTHONUNBUFFERED=1 $(GPU_PYTHON) -m sae_lens_ortho.evals.synthetic.gpu \
		--out $(SYNTHBENCH_GPU_OUT) $(SYNTHBENCH_GPU_ARGS)

# Wheels (CPython 3.12, x86-64 Linux) of what `import sae_lens` needs beyond the GPU image's packages
# (sae_lens_ortho/bench/gpu_wheels.txt); pure-Python packages published only as source are built here.
GPU_WHEEL_PLATFORMS := $(foreach n,28 27 17,--platform manylinux_2_$(n)_x86_64) --platform manylinux2014_x86_64
gpu-wheels: $(STAMP)
	mkdir -p .whl
	while read -r req; do \
		$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
			$(GPU_WHEEL_PLATFORMS) -d .whl "$$req" 2>/dev/null || $(PY) -m pip wheel -q --no-deps -w .whl "$$req" \
			|| exit 1; \
	done < sae_lens_ortho/bench/gpu_wheels.txt
	du -sh .whl

clean:
	rm -rf $(VENV) demo_out bench_out
