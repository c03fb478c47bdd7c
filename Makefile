# The study's commands. `make study` and `make test` each create .venv on first use and reuse it after.
PYTHON ?= python3
VENV ?= .venv
PROFILE ?= demo
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)
export TF_CPP_MIN_LOG_LEVEL ?= 2
PYTEST_ARGS ?=

.PHONY: browser gpu-study paper-bench help setup study sweep docs test lint format test-unit-tf test-unit-jax test-notebooks lab notebooks-check notebooks-fix bench clean-reports

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "the pinned packages (constraints.txt) need Python >= 3.11; $(PYTHON) is " + sys.version.split()[0] + ": run make PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test,jax,ray]"
	touch $(STAMP)

setup: $(STAMP) ## Create .venv and install the project with its pinned dependencies

study: $(STAMP) ## Run every notebook on PROFILE (default demo) into reports/PROFILE/
	$(PY) -m helpers.runner.pipeline --profile $(PROFILE)

GRID ?= params/sweep-demo.yaml
SWEEP_ARGS ?=
sweep: $(STAMP) ## Run the parameter sweep GRID on PROFILE into reports/PROFILE/sweeps/ (SWEEP_ARGS="--executor ray")
	$(PY) -m helpers.runner.sweep --profile $(PROFILE) --grid $(GRID) $(SWEEP_ARGS)

SEEDS ?=
docs: $(STAMP) ## Copy the demo report's figures and tables into README.md and docs/; add the seed sweep's runs (SEEDS="folder ...") to docs/reference/demo.json
	$(PY) -m helpers.report.publish --report-dir reports/demo $(foreach folder,$(SEEDS),--seeds $(folder))

# The unit suite runs along two numeric paths, so a test that compares two computations with == fails here and not only
# on a user's CPU: TensorFlow with Eigen's kernels (oneDNN off, whose results change with the batch size) and one thread
# per operation, then JAX (XLA's kernels, one thread per core) for the tests that may run a Keras computation (marked
# `keras` by tests/conftest.py from their imports); the notebook tests use TensorFlow's defaults. Each part runs on
# WORKERS pytest-xdist processes: unit tests by module (their fixtures are per module), notebook tests by file (the tests
# reading one shared study live in one file, so it is computed once).
UNIT_TF_ENV := KERAS_BACKEND=tensorflow TF_ENABLE_ONEDNN_OPTS=0 STUDY_THREADS=1
UNIT_JAX_ENV := KERAS_BACKEND=jax
WORKERS ?= 2
UNIT_XDIST := -n $(WORKERS) --dist loadscope
NOTEBOOK_XDIST := -n $(WORKERS) --dist loadfile

test: $(STAMP) browser notebooks-check lint ## Run the whole test suite: checks, unit tests on TensorFlow and on JAX, then the notebook tests
	$(UNIT_TF_ENV) $(PY) -m pytest -m "not notebook" $(UNIT_XDIST) $(PYTEST_ARGS)
	$(UNIT_JAX_ENV) $(PY) -m pytest -m "keras and not notebook" $(UNIT_XDIST) $(PYTEST_ARGS)
	KERAS_BACKEND=tensorflow $(PY) -m pytest -m notebook $(NOTEBOOK_XDIST) $(PYTEST_ARGS)

browser: ## Install headless Chromium and its driver for the explorer's browser test, when missing (Debian/Ubuntu, as root)
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver (apt-get) for the explorer's browser test"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "note: no chromium/chromedriver: the explorer's browser test will be skipped (install them: sudo apt-get install chromium chromium-driver)"; fi

lint: $(STAMP) ## Lint and check the formatting of the code (ruff)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

format: $(STAMP) ## Format the code and apply ruff's safe fixes
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

test-unit-tf: $(STAMP) ## Unit tests on the TensorFlow backend only (Eigen kernels, one thread per operation)
	$(UNIT_TF_ENV) $(PY) -m pytest -m "not notebook" $(UNIT_XDIST) $(PYTEST_ARGS)

test-unit-jax: $(STAMP) ## Unit tests that may run a Keras computation, on the JAX backend
	$(UNIT_JAX_ENV) $(PY) -m pytest -m "keras and not notebook" $(UNIT_XDIST) $(PYTEST_ARGS)

test-notebooks: $(STAMP) ## Notebook tests only (nbval over the smoke profile, the runner, sweeps)
	KERAS_BACKEND=tensorflow $(PY) -m pytest -m notebook $(NOTEBOOK_XDIST) $(PYTEST_ARGS)

lab: $(STAMP) ## Open the notebooks in JupyterLab
	$(VENV)/bin/jupyter lab notebooks/ $$(if [ "$$(id -u)" = 0 ]; then echo --allow-root; fi)

notebooks-check: $(STAMP) ## Check notebooks: outputs stripped, Colab cell current, one parameters cell
	$(PY) -m helpers.runner.nbtools notebooks

notebooks-fix: $(STAMP) ## Strip notebook outputs and refresh the Colab set-up cell
	$(PY) -m helpers.runner.nbtools notebooks --fix

bench: $(STAMP) ## Run the CPU-sized speed benchmarks in benchmarks/ (not the paper-size one: make paper-bench)
	@for script in benchmarks/bench_*.py; do \
		if [ "$$script" = benchmarks/bench_paper_study.py ]; then continue; fi; \
		echo "== $$script"; $(PY) $$script || exit 1; done

paper-bench: $(STAMP) ## On a GPU: every stage of the study at the paper's sizes on phantoms, without notebooks (JAX)
	KERAS_BACKEND=jax $(PY) benchmarks/bench_paper_study.py --out reports/paper-bench.json

gpu-study: $(STAMP) ## On a GPU: the paper profile's models and sizes on phantoms through the notebooks, twice (JAX)
	KERAS_BACKEND=jax $(PY) benchmarks/gpu_study.py --out reports/gpu-study.json

clean-reports: ## Delete reports/PROFILE/
	rm -rf reports/$(PROFILE)
