# datawave datasource — developer entry points. Everything runs from the project's own venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run down status test test-unit lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $(STAMP)

## Start the core on the embedded default (local Ray + owners, SQLite store) and show the demo.
run: install
	$(BIN)/datawave up
	$(BIN)/datawave demo --path demo
	@echo
	@echo "The core keeps running in the background: try '$(BIN)/datawave sources list',"
	@echo "'$(BIN)/datawave sources show demo-shop' or '$(BIN)/datawave status'; stop it with 'make down'."

down: install
	$(BIN)/datawave down

status: install
	$(BIN)/datawave status

test: install
	$(BIN)/pytest -q -p no:cacheprovider

test-unit: install
	$(BIN)/pytest -q tests/unit

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/discovery.py
	$(BIN)/python bench/edge_cache.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
