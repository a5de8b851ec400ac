# Two commands matter: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCKS := requirements-dev.txt requirements.txt requirements-uv.txt

.PHONY: demo test lint bench clean image image-wheelhouse wheelhouse deb host-test lock test-latest \
  generated

# The venv is made from the lock, from scratch whenever the lock or pyproject.toml changes, so
# that what runs here is what a fresh clone gets. pip (hash-checked) installs uv, uv installs the
# dev lock exactly (`sync`: nothing more, nothing less), then this project, editable.
$(BIN)/.installed: $(LOCKS) pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
	  -r requirements-uv.txt
	$(BIN)/uv pip sync --quiet --python $(BIN)/python --require-hashes requirements-dev.txt
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $@

demo: $(BIN)/.installed
	bash demo.sh

LINTED := reconciler tests tests_host bench hooks tools

lint: $(BIN)/.installed
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest -n 2 --dist loadgroup

# Re-resolve the lock to the newest versions pyproject.toml's ranges allow, rebuild the venv from
# it and run the whole suite: a dependency bump is this, reviewed as one commit of the lock diff.
lock: $(BIN)/.installed
	$(BIN)/python tools/lock.py
	$(MAKE) test

# The newest releases the ranges allow, in a fresh venv beside the locked one, without the lock:
# what a user who installs the package from the index gets today.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/pip install --quiet --disable-pip-version-check --upgrade -e '.[dev]'
	.venv-latest/bin/pip list --format freeze | grep -i -E '^(cryptography|pydantic|structlog|watchdog)='
	.venv-latest/bin/ruff check $(LINTED)
	.venv-latest/bin/mypy
	.venv-latest/bin/lint-imports
	.venv-latest/bin/pytest -n 2 --dist loadgroup

# dist/wheelhouse: this project's wheel and every locked dependency's (hash-checked), and the
# runtime lock itself, for systemd/install.sh --wheelhouse.
wheelhouse: $(BIN)/.installed
	rm -rf dist/wheelhouse
	$(BIN)/pip wheel --quiet --disable-pip-version-check --require-hashes --no-deps \
	  --wheel-dir dist/wheelhouse -r requirements.txt
	$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps --no-build-isolation \
	  --wheel-dir dist/wheelhouse .
	cp requirements.txt dist/wheelhouse/

# dist/deb/mailgw-tls-reconciler_VERSION_ARCH.deb from the same locked wheels, built with
# dpkg-buildpackage and debhelper (deploy/debian/), then checked by lintian (deploy/deb.sh).
# DEB_VERSION overrides the project's version.
deb: wheelhouse
	bash deploy/deb.sh $(DEB_VERSION)

# A Debian 12 gateway host booted under systemd-nspawn: install.sh and the .deb, the unit, nginx,
# Postfix, certbot (tests_host/). The tier builds its two .deb files itself.
host-test: wheelhouse
	$(BIN)/pytest -p no:cacheprovider -p no:xdist tests_host

bench: $(BIN)/.installed
	$(BIN)/python -m bench

# The files made from one source: shell completions and the manual page from the parser, the
# Kubernetes PrometheusRule from deploy/prometheus/reconciler.rules.yml (tools/generate.py).
generated: $(BIN)/.installed
	$(BIN)/python tools/generate.py

# The container image (docs/kubernetes.md). BASE_IMAGE=localhost/debian-base:12 is built here
# from Debian's packages when missing (deploy/container/debian-base.sh); any other is pulled.
IMAGE ?= localhost/reconciler:dev
BASE_IMAGE ?= localhost/debian-base:12
IMAGE_WHEELS := build/image-wheels

# Every locked dependency as a wheel, downloaded once (again when the lock changes), and the
# lock itself, which the image installs with --require-hashes.
$(IMAGE_WHEELS)/.complete: requirements.txt $(BIN)/.installed
	rm -rf $(IMAGE_WHEELS)
	$(BIN)/pip wheel --quiet --disable-pip-version-check --require-hashes --no-deps \
	  --wheel-dir $(IMAGE_WHEELS) -r requirements.txt
	cp requirements.txt $(IMAGE_WHEELS)/
	touch $@

image-wheelhouse: $(IMAGE_WHEELS)/.complete

IMAGE_WHEEL = SOURCE_DATE_EPOCH=315532800 $(BIN)/pip wheel --no-deps --no-build-isolation \
	  --disable-pip-version-check --wheel-dir build/image-wheel-new .

image: $(IMAGE_WHEELS)/.complete
	rm -rf build/image-wheel-new
	# Seen once on a loaded CI machine: pip exited 0 and left no wheel. Then it runs again,
	# saying everything it does, so that a second miss leaves its reason in the log.
	$(IMAGE_WHEEL) --quiet
	ls build/image-wheel-new/*.whl >/dev/null 2>&1 || $(IMAGE_WHEEL) --verbose
	# Replaced only when its bytes changed: an unchanged wheel keeps the image's layers cached.
	for wheel in build/image-wheel-new/*.whl; do \
	  [ -f "$$wheel" ] || { echo "make image: pip built no wheel in build/image-wheel-new" >&2; exit 1; }; \
	  cmp -s "$$wheel" "$(IMAGE_WHEELS)/$${wheel##*/}" || mv "$$wheel" $(IMAGE_WHEELS)/; done
	if [ "$(BASE_IMAGE)" = localhost/debian-base:12 ]; then \
	  bash deploy/container/debian-base.sh $(BASE_IMAGE); fi
	buildah build --quiet --layers --isolation chroot \
	  --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

clean:
	rm -rf $(VENV) .venv-latest demo .pytest_cache .mypy_cache .ruff_cache
