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

serve: $(STAMP)
	@echo "r1-runtime is not built yet: 'make serve' arrives with the runtime server."
	@echo "Meanwhile: $(BIN)/r1-operator render examples/deepseek.yaml"

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
