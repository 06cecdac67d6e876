# Each target sets itself up on a fresh machine: it creates .venv with a Python 3.12 it finds
# (scripts/find_python312.sh) and installs the package with its dependencies.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv test demo bench gpu-check clean

venv: $(STAMP)

$(STAMP): setup.py pyproject.toml
	@scripts/check_disk.sh $(VENV)
	@test -x $(PY) || "$$(scripts/find_python312.sh)" -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,dali]'
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	scripts/install_demo_corpus_packages.sh
	$(PY) -m regmix_plugin demo --out demo_out

bench: $(STAMP)
	$(PY) bench/run_all.py --out bench_out

# On a machine with NVIDIA GPUs: the GPU paths in at most 8 minutes (12 with 2+ GPUs), a pre-flight line per
# missing requirement, then one line per check (scripts/gpu_check.py; docs/megatron.md, "The GPU check").
# `make gpu-check` builds .venv from the package index; `make gpu-check PYTHON=python3` uses the environment
# you have (an NGC container): it installs the plugin beside that torch, Transformer Engine, apex and
# megatron-core with --no-deps (nothing of theirs is replaced) and runs the check with that Python.
# Only PYTHON given on make's command line selects it: an exported PYTHON is scripts/find_python312.sh's hint
# for building .venv, not a request to install into that interpreter.
GPU_CHECK_ARGS ?=
ifneq ($(origin PYTHON),command line)
gpu-check: $(STAMP)
	$(PY) scripts/gpu_check.py --out gpu_check_out $(GPU_CHECK_ARGS)
else
gpu-check:
	$(PYTHON) -m pip install -q --no-deps --no-build-isolation -e . || echo "gpu-check: note: the plugin could not be installed (see above); the check runs it from this checkout"
	$(PYTHON) scripts/gpu_check.py --out gpu_check_out $(GPU_CHECK_ARGS)
endif

clean:
	rm -rf demo_out bench_out gpu_check_out .pytest_cache
