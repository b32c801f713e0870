# The two commands of the README:
#   make run    - create the environment if missing, run the workflow, build the HTML report
#   make test   - create the environment if missing, run the test suite
# Offline (no downloads of the class images): make run IMAGE_DIR=../shared/data/imagenet-samples
# More config keys: CONFIG_ARGS="images_per_class=3 image_seed=0" (one --config with IMAGE_DIR's; Snakemake
# keeps only the last --config, so SMK_ARGS may not hold one)
#   make verify - check every store in results/ against its completion record
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
IMAGE_DIR ?=
CONFIG ?=
CONFIG_ARGS ?=
SMK_ARGS ?=
PYTEST_ARGS ?=

CONFIG_ITEMS = $(if $(IMAGE_DIR),image_dir=$(abspath $(IMAGE_DIR))) $(CONFIG_ARGS)
# (evaluated when a snakemake command is expanded: a --config in SMK_ARGS would silently drop the other one)
NO_SECOND_CONFIG = $(if $(filter --config --config=% -C,$(SMK_ARGS)),$(error SMK_ARGS holds a --config, \
	and Snakemake keeps only the last --config (IMAGE_DIR or CONFIG_ARGS would vanish): put its KEY=VALUE \
	items in CONFIG_ARGS instead, e.g. make run CONFIG_ARGS="images_per_class=3"))
SMK = $(NO_SECOND_CONFIG)$(BIN)/snakemake --cores all $(if $(CONFIG),--configfile $(CONFIG)) \
	$(if $(strip $(CONFIG_ITEMS)),--config $(CONFIG_ITEMS)) $(SMK_ARGS)

.PHONY: run report test lint dryrun verify bench wheelhouse clean

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

verify: $(VENV)/.installed
	$(BIN)/python -m diffxai.verify results

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
