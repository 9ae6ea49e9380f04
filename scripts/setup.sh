#!/usr/bin/env bash
# Creates ./.venv (once) and installs gpuconv with its test extras into it.  Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -m pip install -q -e ".[test]" >.venv/pip-install.log 2>&1; then
  cat .venv/pip-install.log >&2
  echo "setup failed: pip could not install gpuconv (log above)" >&2
  exit 1
fi
.venv/bin/python -c "import gpuconv, numba, nrrd, deflate" # fails loudly if the install failed
# Byte-compile the package as a wheel install does: an editable install leaves it to the first
# import, which never happens where PYTHONDONTWRITEBYTECODE=1 (then every command compiles ~45
# modules again, ~55 ms of each start; measured on the build machine, issue 15).
.venv/bin/python -m compileall -q src/gpuconv >/dev/null
