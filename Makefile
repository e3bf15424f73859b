# The two commands of the README: `make demo` (the main job on the shipped sample data) and
# `make test`. Both set up .venv first (torch pinned, fairseq built against it, fairseq-el).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint gpu-check

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

# On a CUDA machine with torch installed and no internet: install fairseq and fairseq-el from a
# wheel directory prepared beforehand (docs/gpu_check.md), then run the parity tiers on CUDA and
# a short benchmark; writes gpu-check/gpu_check.{json,md}. GPU_CHECK_ARGS=--smoke: CPU, seconds.
GPU_PYTHON ?= python3
WHEELS ?= wheels
GPU_DEPS := hydra-core==1.3.2 omegaconf==2.3.0 bitarray regex cffi cython packaging sacrebleu \
	rouge-score PyYAML tqdm pytest
gpu-check:
	$(GPU_PYTHON) -m pip install --no-index --find-links $(WHEELS) $(GPU_DEPS)
	$(GPU_PYTHON) -m pip install --no-index --find-links $(WHEELS) --no-deps \
		fairseq-fixed==0.12.3.1 fairseq-el
	$(GPU_PYTHON) -c 'from fairseq_el.bench.cli import gpu_check_main; gpu_check_main()' \
		--out gpu-check $(GPU_CHECK_ARGS)
