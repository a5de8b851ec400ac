# Two commands matter: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	bash demo.sh

lint: $(BIN)/.installed
	$(BIN)/ruff check reconciler tests bench hooks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(BIN)/.installed
	$(BIN)/pytest -n 2 --dist loadgroup

bench: $(BIN)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
