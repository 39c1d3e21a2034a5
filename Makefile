# The README's two commands: `make run` (the main job) and `make test` (the tests).
# Both set everything up on a fresh machine that has Python 3.11+ and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: setup
	$(BIN)/payi-otel demo --fresh

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python tests/benchmarks/run_all.py

clean:
	rm -rf $(VENV) .payi-otel .pytest_cache
