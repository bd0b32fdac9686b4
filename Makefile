# `make run` and `make test` set up .venv from requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: run run-offline test test-fast setup

run: setup        ## the whole chain for params.yaml's `model`
	dvc repro

# Air-gapped form: a local class-folder archive of CIFAR-10 (here the JPEG copy
# in ../shared/data), no CINIC-10 shift set, random initialisation (no ImageNet weights).
# Like every `dvc exp run -S`, it writes these values into params.yaml (`git checkout params.yaml`
# undoes it); the path is relative to the project, so no machine's absolute path lands there.
OFFLINE_CIFAR10 ?= ../shared/data/cifar10-jpg.tar.gz
OFFLINE_SHA256 ?= d34c68f61cca57aa9144c8f25bda427abb9921bd642d5857a2fc1a6b4416f965
run-offline: setup
	dvc exp run -S cifar10.format=folders -S 'cifar10.urls=[$(OFFLINE_CIFAR10)]' \
	  -S cifar10.checksum=sha256:$(OFFLINE_SHA256) -S cifar10.size_bytes=null -S cinic10.urls=none -S weights=none

# Every backbone of core/registry.py as a DVC experiment, one at a time, then the comparison (compare/):
# reports/comparison.md and the recommendation under params.yaml's `compare` limits. Overrides go to
# every experiment, e.g.
#   make benchmark BENCHMARK_ARGS="-S weights=none -S cinic10.urls=none"
BENCHMARK_ARGS ?=
.PHONY: benchmark
benchmark: setup  ## every backbone through the chain, then the comparison
	python -m compare.benchmark $(BENCHMARK_ARGS)

test: setup       ## every test: unit, slow and end-to-end (what CI runs)
	python -m pytest

test-fast: setup  ## the unit tests not marked slow (no real backbones, no dvc runs)
	python -m pytest -m "not e2e and not slow"

setup: $(VENV)/installed

$(VENV)/installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@
