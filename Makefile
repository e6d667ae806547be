# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the suite). Each installs what it
# needs into .venv first (pinned versions from requirements*.txt; torch/torchvision come from pip's local wheels).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.mmpeft-installed
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

.PHONY: demo test lint install clean

$(STAMP): requirements.txt requirements-dev.txt requirements-eval.txt requirements-trackers.txt requirements-quant.txt requirements-zoo.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -r requirements-zoo.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(OFFLINE) $(BIN)/mmpeft demo

test: $(STAMP)
	$(OFFLINE) $(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

lint: $(STAMP)
	$(BIN)/ruff check mmpeft tests

clean:
	rm -rf runs .pytest_cache
