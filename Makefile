# Set-up, the two quick-start jobs and the docs. `make demo`, `make test` and `make docs` work from a
# clean clone.
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

.PHONY: setup demo test docs lint
setup: $(BIN)/diffworld

demo: $(BIN)/diffworld  ## collect, train, evaluate and animate pong into ./demo
	$(BIN)/diffworld demo --out demo

test: $(BIN)/diffworld  ## the whole test suite
	$(BIN)/pytest

# The docs extra is installed on top of the set-up; the stamp re-installs it when pyproject.toml changes.
$(VENV)/.docs: $(BIN)/diffworld pyproject.toml
	$(BIN)/pip install --quiet -e '.[docs]'
	touch $@

lint: $(BIN)/diffworld  ## ruff: the format and the lint rules of pyproject.toml
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

docs: $(VENV)/.docs  ## the docs site, built strictly into ./site
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
