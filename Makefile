# Two commands matter: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean image image-wheelhouse wheelhouse host-test

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

# The container image (docs/kubernetes.md). BASE_IMAGE=localhost/debian-base:12 is built here
# from Debian's packages when missing (deploy/container/debian-base.sh); any other is pulled.
IMAGE ?= localhost/reconciler:dev
BASE_IMAGE ?= localhost/debian-base:12
IMAGE_WHEELS := build/image-wheels

# Every dependency as a wheel, downloaded once (again when pyproject.toml changes); setuptools
# too, so that the project's own wheel is rebuilt offline.
$(IMAGE_WHEELS)/.complete: pyproject.toml $(BIN)/.installed
	$(BIN)/pip wheel --quiet --wheel-dir $(IMAGE_WHEELS) . 'setuptools>=77'
	touch $@

image-wheelhouse: $(IMAGE_WHEELS)/.complete

image: $(IMAGE_WHEELS)/.complete
	rm -rf build/image-wheel-new
	SOURCE_DATE_EPOCH=315532800 $(BIN)/pip wheel --quiet --no-deps --no-index \
	  --find-links $(IMAGE_WHEELS) --wheel-dir build/image-wheel-new .
	# Replaced only when its bytes changed: an unchanged wheel keeps the image's layers cached.
	for wheel in build/image-wheel-new/*.whl; do \
	  [ -f "$$wheel" ] || { echo "make image: pip built no wheel in build/image-wheel-new" >&2; exit 1; }; \
	  cmp -s "$$wheel" "$(IMAGE_WHEELS)/$${wheel##*/}" || mv "$$wheel" $(IMAGE_WHEELS)/; done
	if [ "$(BASE_IMAGE)" = localhost/debian-base:12 ]; then \
	  bash deploy/container/debian-base.sh $(BASE_IMAGE); fi
	buildah build --quiet --layers --isolation chroot \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
