# Two entry points: `make demo` and `make test`. Both create .venv when needed and are idempotent.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PIP     := $(BIN)/pip -q --disable-pip-version-check
STAMP   := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
# torch is pinned to the CPU build on this machine's disk; without it pip pulls a multi-GB CUDA build.
CONSTRAINTS := -c constraints.txt

.PHONY: demo test test-fast install install-dev lint typecheck bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) install $(CONSTRAINTS) 'torch==2.13.0'
	$(PIP) install $(CONSTRAINTS) -e '.[hybrid,onnx]'
	touch $@

$(DEVSTAMP): $(STAMP)
	$(PIP) install $(CONSTRAINTS) -e '.[dev,hybrid,onnx,ray,server,mcp,langchain,langgraph,llamaindex]'
	touch $@

install: $(STAMP)
install-dev: $(DEVSTAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/aether demo ./demo-store --reset

test: $(DEVSTAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: $(DEVSTAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

lint: $(DEVSTAMP)
	$(BIN)/ruff check aether tests benchmarks examples
	$(BIN)/mypy aether
	$(BIN)/lint-imports

bench: $(DEVSTAMP)
	$(PIP) install $(CONSTRAINTS) -e '.[bench,ray]'
	HF_HUB_OFFLINE=1 $(BIN)/python benchmarks/bench_filtered.py

clean:
	rm -rf $(VENV) demo-store .pytest_cache .mypy_cache .ruff_cache
