# The two commands of the README: `make demo` (the main job on the shipped sample data) and
# `make test`. Both set up .venv first (torch pinned, fairseq built against it, fairseq-el).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint gpu-bundle gpu-check

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/bootstrap.sh
	VENV=$(VENV) bash scripts/bootstrap.sh
	touch $@

demo: setup
	$(VENV)/bin/fairseq-el-demo $(DEMO_ARGS)

test: setup
	$(PY) -m pytest -q -ra --durations=15

lint: setup
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

# The GPU check (docs/gpu_check.md). `make gpu-bundle` (a machine with package access): every
# wheel the GPU machine needs beyond its own torch and numpy, for PYTHON (default python3.12),
# into gpu-bundle/ (under 64 MiB). `make gpu-check` (the GPU machine, no internet): installs
# them into .gpu-site/ beside its torch and numpy, and runs the check (this checkout's
# fairseq_el first on the path) into GPU_OUT (gpu_check.{json,md}); GPU_CHECK_ARGS=--smoke: CPU.
GPU_PYTHON ?= python3
GPU_BUNDLE ?= gpu-bundle
GPU_OUT ?= gpu-check
gpu-bundle:
	PYTHON="$(PYTHON)" BUNDLE="$(GPU_BUNDLE)" bash scripts/gpu_bundle.sh
gpu-check:
	$(GPU_PYTHON) -m pip install -q --no-index --no-deps --upgrade --target .gpu-site \
		$(GPU_BUNDLE)/*.whl
	PYTHONPATH="$(CURDIR):$(CURDIR)/.gpu-site" .gpu-site/bin/fairseq-el-gpu-check \
		--out "$(GPU_OUT)" $(GPU_CHECK_ARGS)
