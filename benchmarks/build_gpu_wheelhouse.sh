#!/usr/bin/env bash
# Builds benchmarks/.gpu-wheels/: the wheels benchmarks/gpu_check.sh installs on a GPU machine that cannot reach a
# package registry. That machine has torch, Lightning, timm, scikit-learn, pandas and pyarrow but not omegaconf (whose
# antlr4-python3-runtime 4.9.3 is a source package only, built into a wheel here), hydra-core, kornia, kornia_rs,
# lightly or the pydantic lightly imports, nor, perhaps, pytest for the GPU tests. Versions are constraints.txt's; the binary ones (kornia_rs,
# pydantic_core) for CPython 3.10-3.13 on x86-64 Linux, since the GPU machine's Python is not known here.
# Usage: benchmarks/build_gpu_wheelhouse.sh [WHEELHOUSE]   (PYTHON=path/to/python to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
WHEELS=${1:-benchmarks/.gpu-wheels}
mkdir -p "$WHEELS"
pin() { grep -i -E "^$1==" constraints.txt | head -1; }

# Pure-Python packages, and the one source package, as wheels for any Python 3.
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$WHEELS" \
  "antlr4-python3-runtime==4.9.3" "$(pin omegaconf)" "$(pin hydra-core)" "$(pin kornia)" "$(pin lightly)" \
  "$(pin pydantic)" "$(pin annotated-types)" "$(pin typing-inspection)" "$(pin pytest)" "$(pin pluggy)" \
  "$(pin iniconfig)"

# Compiled packages: one wheel per CPython version.
for version in 3.10 3.11 3.12 3.13; do
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" \
    --python-version "$version" --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 "$(pin kornia_rs)" "$(pin pydantic_core)"
done
ls -l "$WHEELS"
du -sh "$WHEELS"
