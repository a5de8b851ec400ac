# Two commands matter: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# compat: the checkout goes on sys.path through a .pth line. The default editable finder
	# is imported by every interpreter start (~20 ms of each `reconciler` command).
	$(BIN)/pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
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
