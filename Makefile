# `make test` and `make demo` create .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test test-fast test-wheel lint demo bench-speed bench-fmnist clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check ibzoo train tests .ci
	$(VENV)/bin/ruff format --check ibzoo train tests .ci

test: lint
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The wheel a user installs, without -e, in a fresh venv outside the checkout: .ci/test-wheel.
test-wheel:
	PYTHON=$(PYTHON) .ci/test-wheel

demo: $(STAMP)
	$(PY) train/demo.py

bench-speed: $(STAMP)
	$(PY) train/benchmark_speed.py --output bench-speed.json

# Fashion-MNIST from apt-get install dataset-fashion-mnist (else from the Hub); about 2 hours on an idle
# 2-core CPU. Running it again continues an interrupted benchmark, or just re-renders a finished one.
bench-fmnist: $(STAMP)
	$(PY) train/benchmark_fmnist.py --output-dir bench-fmnist --resume

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-output
