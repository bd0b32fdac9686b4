# `make run` and `make test` set up .venv from requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: run run-offline test test-fast setup

run: setup        ## the whole chain for params.yaml's `model`
	dvc repro

# Air-gapped form: CIFAR-10 from a local copy (a directory or .tar.gz of train/<class>/* and test/<class>/*
# images), no CINIC-10 shift set, random initialisation (no ImageNet weights):
#   make run-offline OFFLINE_CIFAR10=/data/cifar10-jpg.tar.gz OFFLINE_CHECKSUM=sha256:<hex>
# OFFLINE_CHECKSUM pins the copy (null: trusted as is). Like every `dvc exp run -S`, it writes these values
# into params.yaml (`git checkout params.yaml` undoes it); a relative path is kept relative, so no machine's
# absolute path lands there.
OFFLINE_CIFAR10 ?=
OFFLINE_CHECKSUM ?= null
run-offline: setup
	@test -n "$(OFFLINE_CIFAR10)" || { echo "error: make run-offline needs OFFLINE_CIFAR10=<CIFAR-10 as class folders: a directory or .tar.gz>" >&2; exit 2; }
	dvc exp run -S cifar10.format=folders -S 'cifar10.urls=[$(OFFLINE_CIFAR10)]' \
	  -S cifar10.checksum=$(OFFLINE_CHECKSUM) -S cifar10.size_bytes=null -S cinic10.urls=none -S weights=none

# Every backbone of core/registry.py as a DVC experiment, one at a time, then the comparison (compare/):
# reports/comparison.md and the recommendation under params.yaml's `compare` limits. Overrides go to
# every experiment, e.g.
#   make benchmark BENCHMARK_ARGS="-S weights=none -S cinic10.urls=none"
# SEEDS=3 trains each model with 3 training seeds on the same images (data_seed) and compares their means.
# JOBS=N runs N experiments at once, each on 1/N of the cores: for a host with cores to spare; the timed
# figures then share the CPU (the comparison says so). 1 is right for timed figures on a small CPU.
# FRACTIONS="0.01 0.05 0.2 1" runs every model at each labelled budget (cifar10.train_fraction) too, for the
# label-efficiency curve: <model>-f0.05 and so on, and the plain <model> at 1 (always run).
BENCHMARK_ARGS ?=
SEEDS ?= 1
JOBS ?= 1
FRACTIONS ?=
.PHONY: benchmark
benchmark: setup  ## every backbone through the chain, then the comparison
	python -m compare.benchmark --seeds $(SEEDS) --jobs $(JOBS)$(if $(strip $(FRACTIONS)), --fractions $(FRACTIONS)) $(BENCHMARK_ARGS)

# Two pytest-xdist workers (make test and make test-fast): the end-to-end tests spend much of their time
# starting processes and in DVC, so two keep both cores of a small machine busy; README's route runs once for
# both (tests/conftest.py). TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
test: setup       ## every test: unit, slow and end-to-end (what CI runs)
	python -m pytest -n $(TEST_WORKERS) --dist loadgroup

test-fast: setup  ## the unit tests not marked slow (no real backbones, no dvc runs)
	python -m pytest -n $(TEST_WORKERS) -m "not e2e and not slow"

setup: $(VENV)/installed

# The code needs Python 3.11 or newer (exception notes, for one); an older python3 would build a venv that
# then fails in the middle of a stage, so setup checks before it builds anything.
PYTHON_MIN := 3.11
$(VENV)/installed: requirements.txt
	@is=$$($(PYTHON) -c 'import platform; print("Python", platform.python_version())' 2>/dev/null) \
	  || is="not a Python that runs"; \
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < tuple(map(int, "$(PYTHON_MIN)".split("."))))' \
	  2>/dev/null || { echo "error: this project needs Python $(PYTHON_MIN) or newer; $(PYTHON) is $$is" \
	  "(run e.g. make setup PYTHON=python3.12)" >&2; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@
