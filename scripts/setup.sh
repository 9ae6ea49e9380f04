#!/usr/bin/env bash
# Creates ./.venv (once) and installs gpuconv with its test extras into it.  Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e ".[test]" 2>&1 | grep -vi "warning" || true
.venv/bin/python -c "import gpuconv, numba, nrrd, deflate" # fails loudly if the install failed
