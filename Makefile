# The two commands of the README:
#   make run    - create the environment if missing, run the workflow, build the HTML report
#   make test   - create the environment if missing, run the test suite
# Offline (no downloads of the class images): make run IMAGE_DIR=../shared/data/imagenet-samples
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
IMAGE_DIR ?=
CONFIG ?=
SMK_ARGS ?=
PYTEST_ARGS ?=

SMK := $(BIN)/snakemake --cores all $(if $(CONFIG),--configfile $(CONFIG)) \
	$(if $(IMAGE_DIR),--config image_dir=$(abspath $(IMAGE_DIR))) $(SMK_ARGS)

.PHONY: run report test lint dryrun bench wheelhouse clean

run: $(VENV)/.installed
	$(BIN)/python -m diffxai.lock
	$(SMK)
	$(SMK) --report results/report.html

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(SMK) --lint

dryrun: $(VENV)/.installed
	$(BIN)/python -m diffxai.lock
	$(SMK) -n

bench: $(VENV)/.installed
	$(BIN)/python bench/bench.py --device cpu --quick

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

# the GPU machine's offline wheelhouse (.whl/) and images (.devdata/); see bench/gpu_flow.sh
wheelhouse: $(VENV)/.installed
	PYTHON=$(BIN)/python bench/prepare_device.sh

clean:
	rm -rf results/* resources .snakemake
