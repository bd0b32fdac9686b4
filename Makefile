# `make run` and `make test` set up .venv from requirements.txt on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)

.PHONY: run test test-fast setup

run: setup        ## the whole chain for params.yaml's `model`
	dvc repro

test: setup       ## unit + end-to-end tests (a few minutes on 2 cores)
	python -m pytest

test-fast: setup  ## unit tests only
	python -m pytest -m "not e2e"

setup: $(VENV)/installed

$(VENV)/installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@
