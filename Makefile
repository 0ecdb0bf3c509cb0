# Quickstart on a fresh machine with Python >= 3.11 and pip:  make demo  |  make test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast bench clean

$(STAMP): pyproject.toml setup.py metaextract_dask/_kernels.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

## make demo: write sample data of every format, scan and profile it on an embedded LocalCluster, summarise the catalog
demo: setup
	$(BIN)/metaextract-dask sample-data demo-data --preset small
	$(BIN)/metaextract-dask scan demo-data -o demo-catalog --profile
	$(BIN)/metaextract-dask info demo-catalog

## make test: the whole suite (slow tests included, as in CI)
test: setup
	$(BIN)/python -m pytest -ra $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -ra -m "not slow" $(PYTEST_ARGS)

## make bench: ratio benchmarks (results go to BENCHMARKS.md by hand, with the command)
bench: setup
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	$(BIN)/python benchmarks/bench_scan.py
	$(BIN)/python benchmarks/bench_rescan.py
	$(BIN)/python benchmarks/bench_profile.py --repeat 3
	$(BIN)/python benchmarks/bench_kernels.py
	$(BIN)/python benchmarks/bench_profile_many.py
	$(BIN)/python benchmarks/bench_deid.py

clean:
	rm -rf $(VENV) demo-data demo-catalog bench-data .pytest_cache
