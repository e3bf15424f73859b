# The two commands of the README: `make demo` (the main job on the shipped sample data) and
# `make test`. Both set up .venv first (torch pinned, fairseq built against it, fairseq-el).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint

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
