# yolo-distill — every target sets up what it needs (the virtualenv) by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test test-fast test-all lint format docs demo image-check bench-speed bench-accuracy bench-data clean

install: $(STAMP)

$(STAMP): pyproject.toml images/requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --constraint images/requirements.lock -e '.[dev]'
	touch $(STAMP)

# The suite in TEST_WORKERS processes (pytest-xdist), a test file to a process: the module's fixtures (a trained
# model, a started server) are made once; each process has its own stack. Tests wait on subprocesses, servers and
# single-threaded imports for much of their time, so two processes finish far sooner on 2 cores than one. Files go
# out in collection order, the longest first (tests/conftest.py), so both processes end together.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test: install
	$(BIN)/python -m pytest $(PYTEST_PARALLEL)

# The fast tier: tests marked `fast` (in-process: no training, no server, no subprocess; the guard in
# tests/conftest.py fails a test wrongly marked), for checking a change to a loss or a setting in seconds.
test-fast: install
	$(BIN)/python -m pytest -m "fast and not slow" -q

test-all: install
	$(BIN)/python -m pytest -m "" $(PYTEST_PARALLEL)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The docs site (MkDocs + Material; pages in docs/, reference tables generated from the code by docs/hooks/) into
# site/, built strictly: a broken link, a missing page or a setting missing from the reference fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

demo: install
	bash scripts/demo.sh

# Build the pipeline image and run the compiled pipeline's components inside it (images/check.sh; minutes, ~15 GB).
image-check: install
	bash images/check.sh

# Benchmarks (scripts with reports in benchmarks/results/, not tests): PROFILE=quick|cpu|full, DEVICE=cpu|0
PROFILE ?= cpu
DEVICE  ?= cpu
bench-speed: install
	$(BIN)/python -m benchmarks.speed --profile $(PROFILE) --device $(DEVICE)

bench-accuracy: install
	$(BIN)/python -m benchmarks.accuracy --profile $(PROFILE) --device $(DEVICE)

# Publishing and fetching datasets, one object per file vs shards, on loopback and through a 20 ms proxy.
bench-data: install
	$(BIN)/python -m benchmarks.data --profile $(if $(filter quick,$(PROFILE)),quick,default)

clean:
	-$(BIN)/yolo-distill stack down
	rm -rf $(VENV) runs build *.egg-info .pytest_cache .ruff_cache .stack benchmarks/.work
