#!/usr/bin/env bash
# One command: set up, then run the whole test suite (no GPU needed; GPU tests skip cleanly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
