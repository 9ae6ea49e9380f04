#!/usr/bin/env bash
# One command: set up, lint (ruff), then run the whole test suite (no GPU needed; GPU tests
# skip cleanly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks docs   # lint first: [tool.ruff] in pyproject.toml
exec .venv/bin/python -m pytest -q "$@"
