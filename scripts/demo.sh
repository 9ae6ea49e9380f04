#!/usr/bin/env bash
# One command: set up, generate the embedded synthetic corpus, convert it, say where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-demo-out}
.venv/bin/gpuconv synth "$OUT/corpus" -n 20 --size 512x512x64 --seed 0
.venv/bin/gpuconv convert "$OUT/corpus" --out "$OUT/dataset" --split "$OUT/corpus/split.csv" \
  --instances --no-progress
echo "YOLO dataset ready: $(cd "$OUT/dataset" && pwd)/dataset.yaml"
