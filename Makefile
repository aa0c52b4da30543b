# Two commands from a fresh clone:  `make demo`  and  `make test`  (see README.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
export UNLEARNLEAK_PROGRESS ?= 1

.PHONY: demo test lint typecheck pytest install install-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e .
	@touch $@

# `make test TEST_EXTRAS=test,integration` adds the server stack (MLServer, Ray, Playwright); CI does.
TEST_EXTRAS ?= test
comma := ,
TEST_STAMP := $(VENV)/.installed-$(subst $(comma),-,$(TEST_EXTRAS))

$(TEST_STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[$(TEST_EXTRAS)]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(TEST_STAMP)

## Set up and run the main job on the embedded offline default (real CIFAR-10 photos shipped with a dependency).
demo: install
	$(BIN)/unlearnleak demo --out runs/demo --overwrite

## Set up with the test extras, then lint, type-check and run the test suite.
test: install-test lint typecheck pytest

lint: install-test
	$(BIN)/ruff check src tests benchmarks scripts examples

typecheck: install-test
	$(BIN)/mypy src

pytest: install-test
	UNLEARNLEAK_PROGRESS=0 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
