# vtr_bench — `make help` lists targets. Every target installs what it needs first (a local .venv).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false
MODEL ?= tiny_llava
BENCH ?= shapes
METHODS ?= random,fastv,pdrop,sparsevlm,downsample,psigmoid
BUDGETS ?= 0.5,0.3,0.125
TASKS ?=
SWEEP_ARGS = model=$(MODEL) benchmark=$(BENCH) $(if $(TASKS),benchmark.tasks=[$(TASKS)])

.PHONY: help install run test flops sweep bench bench-search device-check report wandb-sync tiny-models tiny-tables sparse-tables clean

help:  ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	# lmms-eval pulls a CUDA torchvision that breaks `import transformers` model classes on a CPU torch
	$(PY) -m pip uninstall -y -q torchvision
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install vtr_bench (pinned) without torchvision

run: $(STAMP)  ## the default job: bundled model on the shapes benchmark (override with ARGS="method=fastv budget=0.5")
	$(PY) -m vtr_bench $(ARGS)

test: $(STAMP)  ## the fast test suite
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" $(ARGS)

flops: $(STAMP)  ## weights-free FLOPs plan, e.g. make flops ARGS="model=llava15_7b method=fastv method.r=0.5"
	$(PY) -m vtr_bench run.mode=flops $(ARGS)

sweep: $(STAMP)  ## full + METHODS x BUDGETS on MODEL / BENCH (or TASKS=a,b); finished runs are skipped on re-run
	$(PY) -m vtr_bench $(SWEEP_ARGS) method=full $(ARGS)
	$(PY) -m vtr_bench -m $(SWEEP_ARGS) method=$(METHODS) budget=$(BUDGETS) $(ARGS)

bench: $(STAMP)  ## efficiency benchmark on the synthetic CPU model -> benchmarks/results/bench.{json,md,png}
	$(PY) -m vtr_bench.bench --model synthetic_cpu --out benchmarks/results $(ARGS)

bench-search: $(STAMP)  ## search cost, each speed-up off / on (tiny_llava, 50 samples) -> benchmarks/results/search.{json,md}
	OMP_NUM_THREADS=1 $(PY) -m vtr_bench.bench_search --model $(MODEL) --out benchmarks/results $(ARGS)

device-check: $(STAMP)  ## GPU slot: engine checks + benchmark on 7B/8B shapes, bf16 -> benchmarks/results/gpu/ (off a GPU: small shapes)
	PY=$(PY) recipes/device_check.sh $(ARGS)

report: $(STAMP)  ## table + plots from the run directories -> runs/report/
	$(PY) -m vtr_bench.report --runs runs --out runs/report $(ARGS)

wandb-sync: $(STAMP)  ## upload offline W&B runs (needs a W&B login and network)
	find runs -type d -name 'offline-run-*' -exec $(VENV)/bin/wandb sync {} +

tiny-models: $(STAMP)  ## retrain the bundled tiny checkpoints on CPU (two at a time, one thread each; resumable)
	$(PY) -m vtr_bench.tiny.train --all

tiny-tables: $(STAMP)  ## every method x budget on both bundled tiny models -> runs/tiny/report/ (README tables)
	recipes/tiny_tables.sh $(ARGS)

sparse-tables: $(STAMP)  ## the paper's questions on the sparse benchmark (tiny_sparse_llava) -> runs/sparse/report/
	recipes/sparse_tables.sh $(ARGS)

clean:  ## remove run outputs (keeps .venv)
	rm -rf runs
