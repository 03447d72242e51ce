# gali-harness: `make demo` (set up + run the CPU demo) and `make test` (set up + run the tests).
# `make test-latest` repeats the model-level tests on the newest releases of every dependency (a second venv).
VENV ?= .venv
VENV_LATEST ?= .venv-latest
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM := false
# the tests that exercise transformers' model code: methods, the preflight, gali-check on every method and family
MODEL_TESTS := tests/methods tests/test_preflight.py tests/test_check.py tests/test_check_all.py tests/demo/test_extrapolation.py

.PHONY: setup demo demo-real readme-tables test test-latest lint bench lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/lock.txt scripts/setup.sh
	bash scripts/setup.sh
	touch $@

demo: setup
	$(VENV)/bin/gali-demo run

demo-real: setup
	$(VENV)/bin/gali-demo real

# rewrite README's measured tables from the commands that produce them (make demo's table)
readme-tables: setup
	$(PY) scripts/update_readme_tables.py

test: setup
	$(VENV)/bin/pytest

test-latest:
	VENV=$(VENV_LATEST) LOCK=none bash scripts/setup.sh
	$(VENV_LATEST)/bin/python -m pip list --format=freeze | grep -i -E '^(torch|transformers|tokenizers|huggingface.hub|safetensors|numpy)=='
	$(VENV_LATEST)/bin/pytest $(MODEL_TESTS)

lint: setup
	$(VENV)/bin/ruff check harness tests scripts
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/pyright

bench: setup
	$(PY) scripts/bench_methods.py

# regenerate requirements/lock.txt from a fresh venv of the newest releases (run `make test-latest` first)
lock: test-latest
	bash scripts/lock.sh $(VENV_LATEST)

clean:
	rm -rf results .pytest_cache
