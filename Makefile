# Two commands matter: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean wheelhouse host-test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	bash demo.sh

lint: $(BIN)/.installed
	$(BIN)/ruff check reconciler tests tests_host bench hooks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: $(BIN)/.installed
	$(BIN)/pytest -n 2 --dist loadgroup

# dist/wheelhouse: this project's wheel and every dependency's, for systemd/install.sh --wheelhouse.
wheelhouse: $(BIN)/.installed
	rm -rf dist/wheelhouse
	$(BIN)/pip wheel --quiet --wheel-dir dist/wheelhouse .

# A Debian 12 booted under systemd-nspawn: install.sh, the unit, the system nginx (tests_host/).
host-test: wheelhouse
	$(BIN)/pytest -p no:cacheprovider -p no:xdist tests_host

bench: $(BIN)/.installed
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
