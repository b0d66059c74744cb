# Two entry points: `make serve` (the main job) and `make test` (everything CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck unit crds docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[operator,runtime,dev]'
	touch $(STAMP)

# The demo model (tiny, random weights, R1's tokenizer and template) on 127.0.0.1:8000.
serve: $(STAMP)
	@test -f .cache/demo-model/config.json || $(BIN)/r1-runtime demo-model .cache/demo-model
	$(BIN)/r1-runtime serve --model .cache/demo-model --served-model-name r1-demo \
		--host 127.0.0.1 --port 8000 --backend eager

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy operator/r1_operator runtime/r1_runtime/engine

unit: $(STAMP)
	$(BIN)/pytest

# Regenerate the committed CRD from api.py (tests fail when it drifts).
crds: $(STAMP)
	$(BIN)/r1-operator crd > crds/deepseekdeployments.yaml

# Regenerate the CRD field reference in README.md (tests fail when it drifts).
docs: $(STAMP)
	$(BIN)/python -m r1_operator.reference README.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
