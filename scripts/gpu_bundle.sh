#!/usr/bin/env bash
# Build gpu-bundle/: every wheel a GPU machine without internet needs beyond its own torch and
# numpy, for one Python (what `make gpu-bundle` runs; docs/gpu_check.md).
#
#   PYTHON=python3.12 bash scripts/gpu_bundle.sh     # the GPU machine's Python (the default)
#
# - fairseq-fixed 0.12.3.1, built for that Python against numpy 2 (the GPU machine's numpy major)
#   without its torch C++ extensions (libbase, libnat, alignment bindings: nothing generation
#   imports). Its setup.py imports `torch.utils.cpp_extension` unconditionally, so the build
#   venv gets a stand-in module (build/gpu-bundle-stub/) that drops those extensions instead of
#   a multi-GB torch; the numpy/cython extensions (libbleu, data_utils_fast,
#   token_block_utils_fast) are built as usual. Its copy of fairseq's examples/ (10 MB of data
#   files of other projects; nothing imports them) is taken out of the wheel.
# - what fairseq and fairseq-el import at generation and what the check runs (REQUIREMENTS),
#   with their dependencies, as wheels for that Python (sdists such as antlr4 and rouge-score
#   are built into wheels); numpy and torch are removed: they are the GPU machine's own.
# - fairseq-el itself, from this checkout.
# The folder must stay under 64 MiB (what travels to the GPU machine beside the git tree).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.12}
BUNDLE=${BUNDLE:-gpu-bundle}
LIMIT_MIB=64
FAIRSEQ="fairseq-fixed==0.12.3.1"
# fairseq-fixed's install_requires less torch and numpy (the GPU machine's), torchaudio (imported
# only by speech code, lazily), cython and cffi (build-time / unused); scikit-learn and scipy
# stay: `import fairseq` imports them (its audio-classification task, sentence-prediction
# criterion). fairseq-el's own; pytest for the parity tiers.
REQUIREMENTS=(
    "hydra-core==1.3.2" "omegaconf==2.3.0" bitarray regex packaging tqdm scikit-learn scipy
    "sacrebleu>=2.0" "rouge-score>=0.1.2" "PyYAML>=5.1"
    "pytest>=7"
)

# The interpreter: on PATH, else the newest pyenv version of that name (pyenv's shim refuses a
# version that is installed but not selected).
if ! "$PYTHON" -c '' 2>/dev/null; then
    found=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"${PYTHON#python}".*/bin/"$PYTHON" \
        2>/dev/null | sort -V | tail -1 || true)
    [ -n "$found" ] || { echo "gpu-bundle: no $PYTHON (set PYTHON=/path/to/python)" >&2; exit 1; }
    PYTHON=$found
fi
VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
START=$(date +%s)
echo "gpu-bundle: Python $VERSION ($PYTHON) -> $BUNDLE/"

BUILD=build/gpu-bundle-py$VERSION
[ -x "$BUILD/bin/python" ] || "$PYTHON" -m venv "$BUILD"
PIP=("$BUILD/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q -U "numpy>=2" cython setuptools wheel
if "$BUILD/bin/python" -c 'import torch' 2>/dev/null; then
    echo "gpu-bundle: $BUILD has torch; the bundle is built without it" >&2
    exit 1
fi

STUB=build/gpu-bundle-stub
mkdir -p "$STUB/torch/utils"
: >"$STUB/torch/__init__.py"
: >"$STUB/torch/utils/__init__.py"
cat >"$STUB/torch/utils/cpp_extension.py" <<'EOF'
"""Build-time stand-in for torch.utils.cpp_extension (scripts/gpu_bundle.sh): fairseq's setup.py
imports it for its optional torch C++ extensions; these are marked here and left unbuilt."""
from setuptools import Extension
from setuptools.command.build_ext import build_ext


def CppExtension(name, sources, *args, **kwargs):
    ext = Extension(name, sources, *args, **kwargs)
    ext.needs_torch = True
    return ext


class BuildExtension(build_ext):
    def finalize_options(self):
        super().finalize_options()
        skipped = [e.name for e in self.extensions if getattr(e, "needs_torch", False)]
        self.extensions = [e for e in self.extensions if not getattr(e, "needs_torch", False)]
        print("gpu-bundle: not building the torch extensions", ", ".join(skipped))
EOF

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE"
# from source (--no-binary: PyPI has cp312 wheels of it, built with torch extensions against
# another numpy); --no-cache-dir: nor a wheel pip built earlier, e.g. the one `make setup` built
env -u CUDA_HOME PYTHONPATH="$PWD/$STUB" "${PIP[@]}" wheel -q --no-cache-dir --no-deps \
    --no-build-isolation --no-binary fairseq-fixed -w "$BUILD/fairseq" "$FAIRSEQ"
rm -rf "$BUILD/unpacked"
"$BUILD/bin/python" -m wheel unpack -d "$BUILD/unpacked" "$BUILD"/fairseq/fairseq_fixed-*.whl
rm -rf "$BUILD"/unpacked/*/fairseq/examples
"$BUILD/bin/python" -m wheel pack -d "$BUNDLE" "$BUILD"/unpacked/*
rm -rf "$BUILD/fairseq" "$BUILD/unpacked"
"${PIP[@]}" wheel -q --no-deps --no-build-isolation -w "$BUNDLE" .
"${PIP[@]}" wheel -q -w "$BUNDLE" "${REQUIREMENTS[@]}"
rm -f "$BUNDLE"/numpy-*.whl
if ls "$BUNDLE" | grep -qiE '^(torch|nvidia|triton)'; then
    echo "gpu-bundle: torch or CUDA wheels were pulled in:" "$BUNDLE"/* >&2
    exit 1
fi
printf '%s\n' "${REQUIREMENTS[@]}" >"$BUNDLE/requirements.txt"
NUMPY=$("$BUILD/bin/python" -c 'import numpy; print(numpy.__version__)')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain 2>/dev/null)" ] || COMMIT="$COMMIT with uncommitted changes"
echo "Python $VERSION, fairseq built against numpy $NUMPY, fairseq-el from $COMMIT" \
    >"$BUNDLE/BUILT_FOR"

ls -l "$BUNDLE" | awk 'NR > 1 {printf "  %8.1f KiB  %s\n", $5 / 1024, $9}'
BYTES=$(du -sb "$BUNDLE" | cut -f1)
MIB=$(awk -v b="$BYTES" 'BEGIN {printf "%.1f", b / 1048576}')
echo "gpu-bundle: $BUNDLE/ $MIB MiB ($(ls "$BUNDLE"/*.whl | wc -l) wheels) for Python $VERSION," \
    "numpy $NUMPY, built in $(($(date +%s) - START)) s"
if [ "$BYTES" -ge $((LIMIT_MIB * 1048576)) ]; then
    echo "gpu-bundle: over the ${LIMIT_MIB} MiB limit" >&2
    exit 1
fi
