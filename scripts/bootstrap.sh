#!/usr/bin/env bash
# Create the virtual environment and install fairseq-el into it (what `make setup` runs).
#
# torch is pinned: an unpinned torch pulls a multi-GB CUDA build. fairseq is built against that
# torch without build isolation (otherwise pip builds it against a second torch it downloads).
# PyPI's fairseq 0.12.2 does not import on Python >= 3.11; fairseq-fixed provides `fairseq` there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH=${TORCH:-torch==2.13.0}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check)
# numpy's major version is chosen here, before fairseq's extensions are compiled against it:
# numpy 2 on Python >= 3.12 (fairseq_el/compat/numpy2.py covers fairseq's numpy-1 names),
# numpy<2 below. Override with NUMPY=...
if "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
    NUMPY=${NUMPY:-numpy>=2}
else
    NUMPY=${NUMPY:-numpy<2}
fi
"${PIP[@]}" "$TORCH" "$NUMPY" cython setuptools wheel
if "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    FAIRSEQ="fairseq-fixed==0.12.3.1"
else
    FAIRSEQ="fairseq==0.12.2"
fi
"$VENV/bin/python" -c 'import fairseq' 2>/dev/null || "${PIP[@]}" --no-build-isolation "$FAIRSEQ"
"${PIP[@]}" "$TORCH" "$NUMPY" -e ".[test,hf,plot]"
"$VENV/bin/python" -c 'import torch, fairseq, fairseq_el; print("fairseq-el ready: torch", torch.__version__, "fairseq", fairseq.__version__)'
