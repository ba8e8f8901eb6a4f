# Two commands for users: `make demo` and `make test`. Both set themselves up from nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ANVIL  := node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
export FLWR_TELEMETRY_ENABLED := 0
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: demo test lint typecheck unit install dev contracts bench clean docs

$(BIN)/ailedger: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(BIN)/ailedger
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(ANVIL): package.json
	npm install --no-audit --no-fund --loglevel=error
	test -x $@ && touch $@

install: $(BIN)/ailedger

dev: $(VENV)/.dev $(ANVIL)

demo: $(BIN)/ailedger
	$(BIN)/ailedger demo

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks examples docs
	$(BIN)/ruff format --check src tests benchmarks examples docs

typecheck: $(VENV)/.dev
	$(BIN)/mypy src

unit: dev
	$(BIN)/pytest -q -n 2 --dist loadfile

test: lint typecheck unit

contracts: $(VENV)/.dev
	$(BIN)/python -m ailedger.ledger.contracts

docs: $(VENV)/.dev
	$(BIN)/python docs/build_api.py docs/api

bench: dev
	$(BIN)/python benchmarks/ledger.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
