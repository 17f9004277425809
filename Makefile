# trainjob: every command of the project. `make` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

IMAGE ?= trainjob
TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
DATA ?= ./data
OUT ?= ./outputs
ARGS ?=
# The image's variant: full | v2 (no SDK v1 run-time) | train (v2 training only); docs/image.md says which to use.
VARIANT ?= full
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: help venv azurite docs run run-local demo data test test-fast lint bench bench-fast bench-precision bench-transfer build base-image-offline smoke shell \
	lint-docker chaos workspace compute upload-data push-image submit-aml sweep-aml register-model deploy-aml bench-serve \
	bench-predict score-aml deploy-batch-aml

help: ## Show this list.
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-20s\033[0m %s\n", $$1, $$2}'

venv: $(VENV)/.installed ## Create .venv with every dependency pinned (constraints.txt).

$(VENV)/.installed: pyproject.toml constraints.txt
	scripts/make_venv.sh $(PYTHON) $(VENV)
	@touch $@

# --- train ---------------------------------------------------------------------------------------------------------
run: venv ## Train on $(DATA) in the image, building it first if there is none (--demo when $(DATA) holds no dataset; .venv, loudly, without Docker).
	scripts/docker/run.sh "$(IMAGE):latest" "$(DATA)" "$(OUT)" $(ARGS)

run-local: venv ## Train on $(DATA) in the local .venv, without Docker.
	$(VENV)/bin/train --data_path "$(DATA)" --output_dir "$(OUT)" $(ARGS)

demo: venv ## Train one minute on generated data in the local .venv, to see the whole flow.
	$(VENV)/bin/train --demo --output_dir "$(OUT)" $(ARGS)

data: venv ## Download the real CIFAR-10 (the tutorial's layout) into $(DATA), where the internet is reachable.
	$(PY) scripts/get_cifar10.py "$(DATA)"

# --- check ---------------------------------------------------------------------------------------------------------
test: venv ## Run every test: unit, CLI, torchrun, Azure offline, serving, and the real image in a Docker engine.
	@if command -v npm >/dev/null; then $(MAKE) -s --no-print-directory azurite; \
	else echo "make test: no npm, so no Azurite: the SDK v2 upload test will be skipped (make azurite)"; fi
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: venv ## Run the quick tests only (no image build, no slow end-to-end runs).
	$(PY) -m pytest -q -m "not slow and not docker" $(PYTEST_ARGS)

# Azurite, Microsoft's Azure Storage emulator, is the real blob service the v2 upload test writes to on loopback.
AZURITE_VERSION := 3.37.0
AZURITE := build/azurite/node_modules/.bin/azurite-blob

azurite: $(AZURITE) ## Install Azurite (the Azure Storage emulator the upload test uses) into build/azurite; needs npm.

$(AZURITE):
	@command -v npm >/dev/null || { echo "make azurite: npm not found; install Node.js and npm (apt-get install npm)" >&2; exit 2; }
	npm install --no-audit --no-fund --loglevel=error --prefix build/azurite azurite@$(AZURITE_VERSION)

docs: venv ## Regenerate docs/flags.md from train's argument parsers (tests/test_docs.py checks it is current).
	$(PY) scripts/docs/flags.py

lint: venv ## Lint the Python code (ruff) and the Dockerfile (hadolint, warning level).
	$(VENV)/bin/ruff check src scripts tests
	$(VENV)/bin/hadolint -t warning docker/Dockerfile

bench: venv ## Time the tutorial's original script against trainjob's same recipe on the real CIFAR-10 (ARGS="--repeats 3": medians).
	$(PY) scripts/bench/bench_tutorial.py $(ARGS)

bench-fast: venv ## Train the fast recipe on the real CIFAR-10 and report time, accuracy and throughput (ARGS="--time_budget 600 --seeds 0,1,2": to a budget).
	$(PY) scripts/bench/bench_fast.py $(ARGS)

bench-transfer: venv ## Pretrained transfer (frozen, warm cache, fine-tuned) against the fast recipe on real photos.
	$(PY) scripts/bench/bench_transfer.py $(ARGS)

bench-serve: venv ## Requests/s and p50/p99 latency of `train serve` (concurrency 1 and 4) against `train predict`, tutorial and transfer models; a hostile row (50 slow, 200 idle clients).
	$(PY) scripts/bench/bench_serve.py $(ARGS)

bench-predict: venv ## Images/s and peak RSS of `train predict --output` (tutorial, fast, transfer; torch and ONNX) on 10,000+ real photos, against the bare model forward and `train serve`.
	$(PY) scripts/bench/bench_predict.py $(ARGS)

bench-precision: venv ## Time a fast-recipe training step in fp32 and in bf16 on this CPU (ARGS=--profile: where its time goes).
	$(PY) scripts/bench/bench_precision.py $(ARGS)

# --- image (docker/, entrypoint/, scripts/docker/) ------------------------------------------------------------------
build: ## Build the image, tagged $(IMAGE):$(TAG) and $(IMAGE):latest (VARIANT=v2 or train: lean images, tagged -v2 / -train).
	VARIANT=$(VARIANT) scripts/docker/build.sh "$(IMAGE)" "$(TAG)"

base-image-offline: ## Make the python:3.11-slim-bookworm stand-in from Debian packages, where no registry answers.
	scripts/docker/base_image_offline.sh

smoke: ## Train one epoch on generated data in the built image: a quick manual check after make build.
	scripts/docker/smoke.sh "$(IMAGE):latest"

shell: ## Open a shell in the image with $(DATA) and $(OUT) mounted.
	scripts/docker/run.sh --shell "$(IMAGE):latest" "$(DATA)" "$(OUT)"

lint-docker: venv ## Lint the Dockerfile (hadolint at warning level).
	$(VENV)/bin/hadolint -t warning docker/Dockerfile

chaos: venv ## Stop the image at random moments, resume each time, and compare with an uninterrupted run.
	$(PY) scripts/chaos.py --image "$(IMAGE):latest" $(ARGS)

# --- Azure ML (scripts/aml/): the tutorial's cloud half, with this image --------------------------------------------
AML_ARGS ?=
AML_SDK ?= v1

# AML_SDK=v1 (azureml-core, the tutorial's) or v2 (azure-ai-ml); DRY_RUN=1 contacts nothing (v2 writes build/aml/*.yml).
DRY := $(if $(DRY_RUN),--dry-run)

workspace: venv ## Create or get the Azure ML workspace and write .azureml/config.json (tutorial part 1).
	$(PY) scripts/aml/workspace.py --sdk $(AML_SDK) $(DRY) $(AML_ARGS)

compute: venv ## Get or create cpu-cluster (STANDARD_D2_V2, 0-4 nodes); AML_SDK=v2 DRY_RUN=1 writes build/aml/compute.yml.
	$(PY) scripts/aml/compute.py --sdk $(AML_SDK) $(DRY) $(AML_ARGS)

upload-data: venv ## Check $(DATA) holds a usable dataset, then upload it to the datastore at datasets/cifar10.
	$(PY) scripts/aml/upload_data.py --sdk $(AML_SDK) $(DRY) --src "$(DATA)" $(AML_ARGS)

push-image: venv ## Push the image to the workspace registry and register it as an Azure ML environment.
	$(PY) scripts/aml/push_image.py --sdk $(AML_SDK) $(DRY) --image "$(IMAGE)" --tag "$(TAG)" $(AML_ARGS)

submit-aml: venv ## Submit the tutorial's run on cpu-cluster with the image (AML_SDK=v2: a command job); DRY_RUN=1: offline.
	@$(PY) scripts/aml/submit.py --sdk $(AML_SDK) $(DRY) $(AML_ARGS)

register-model: venv ## Register a finished SDK v2 job's model.pt (AML_ARGS="--job NAME", or "--sweep NAME": its best trial); DRY_RUN=1 writes build/aml/model.yml.
	@$(PY) scripts/aml/register_model.py $(DRY) $(AML_ARGS)

deploy-aml: venv ## Serve a registered model (AML_ARGS="--model NAME:VERSION") from a managed online endpoint; DRY_RUN=1 writes build/aml/{endpoint,deployment}.yml.
	@$(PY) scripts/aml/deploy.py $(DRY) $(AML_ARGS)

score-aml: venv ## Score a folder of images with a registered model as an SDK v2 command job (AML_ARGS="--model NAME:VERSION --data PATH"); DRY_RUN=1 writes build/aml/score-job.yml.
	@$(PY) scripts/aml/score_job.py $(DRY) $(AML_ARGS)

deploy-batch-aml: venv ## Create a batch endpoint and a model deployment that scores folders with the image (AML_ARGS="--model NAME:VERSION"); DRY_RUN=1 writes build/aml/batch-{endpoint,deployment}.yml.
	@$(PY) scripts/aml/deploy_batch.py $(DRY) $(AML_ARGS)

sweep-aml: venv ## Sweep learning rate and momentum as an SDK v2 sweep job; DRY_RUN=1 writes build/aml/sweep.yml.
	@$(PY) scripts/aml/sweep.py --sdk v2 $(DRY) $(AML_ARGS)
