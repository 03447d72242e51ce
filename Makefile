# gali-harness: `make demo` (set up + run the CPU demo) and `make test` (set up + run the tests).
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo demo-real test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh
	touch $@

demo: setup
	$(VENV)/bin/gali-demo run

demo-real: setup
	$(VENV)/bin/gali-demo real

test: setup
	$(VENV)/bin/pytest

lint: setup
	$(VENV)/bin/ruff check harness tests scripts

bench: setup
	$(PY) scripts/bench_methods.py

clean:
	rm -rf results .pytest_cache
