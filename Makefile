# Set-up and the two quick-start jobs. `make demo` and `make test` work from a clean clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned: on this project's CPU machines pip takes a local CPU
# build; an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

$(BIN)/diffworld: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

.PHONY: setup demo test
setup: $(BIN)/diffworld

demo: $(BIN)/diffworld  ## collect, train, evaluate and animate pong into ./demo
	$(BIN)/diffworld demo --out demo

test: $(BIN)/diffworld  ## the whole test suite
	$(BIN)/pytest
