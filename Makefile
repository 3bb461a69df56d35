# `make test` and `make demo` create .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# `make test-min` runs the suite in its own venv against the lower bounds pyproject.toml declares for these.
MIN_VENV     ?= .venv-min
MIN_PY       := $(MIN_VENV)/bin/python
MIN_STAMP    := $(MIN_VENV)/.installed
MIN_PACKAGES := timm huggingface-hub safetensors accelerate datasets pyyaml tensorboard tqdm

.PHONY: install test test-fast test-min test-wheel lint demo bench-speed bench-fmnist clean

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

# Seeded from .venv by hard links (.ci/seed_venv.py) so that PyTorch is not installed a second time.
$(MIN_STAMP): $(STAMP) pyproject.toml .ci/min_constraints.py .ci/seed_venv.py
	rm -rf $(MIN_VENV)
	$(PY) .ci/seed_venv.py $(MIN_VENV) --extras dev
	$(PYTHON) .ci/min_constraints.py $(MIN_PACKAGES) > $(MIN_VENV)/constraints.txt
	$(MIN_PY) -m pip install --quiet --disable-pip-version-check -c $(MIN_VENV)/constraints.txt -e '.[dev]'
	touch $(MIN_STAMP)

# The whole suite against the declared minimum versions (the lower bounds must be true).
test-min: $(MIN_STAMP)
	@$(MIN_PY) -c "from importlib.metadata import version as v; \
	    print('test-min:', ', '.join(f'{p} {v(p)}' for p in '$(MIN_PACKAGES)'.split()))"
	$(MIN_PY) -m pytest -q

# The wheel a user installs, without -e, in a fresh venv outside the checkout: .ci/test-wheel.
test-wheel: $(STAMP)
	SEED_PYTHON=$(PY) .ci/test-wheel

# Fashion-MNIST's IDX files come from Debian's dataset-fashion-mnist where apt-get can install it (as root);
# otherwise the demo copies the Hub's zalando-datasets/fashion_mnist.
FMNIST_IDX := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
demo: $(STAMP)
	@test -e $(FMNIST_IDX) || [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || \
	    apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	    (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1) || true
	$(PY) train/demo.py

bench-speed: $(STAMP)
	$(PY) train/benchmark_speed.py --output bench-speed.json

# Fashion-MNIST from apt-get install dataset-fashion-mnist (else from the Hub); about a day on an idle
# 2-core CPU, in as many pieces as you like: running it again continues where it stopped (finished runs
# are kept, an interrupted one continues from its checkpoint), or just re-renders a finished one.
bench-fmnist: $(STAMP)
	$(PY) train/benchmark_fmnist.py --output-dir bench-fmnist --resume

clean:
	rm -rf $(VENV) $(MIN_VENV) .venv-wheel .pytest_cache .ruff_cache demo-output
