#!/usr/bin/env bash
# One command: set up, generate the embedded synthetic corpus, convert it, say where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-demo-out}
.venv/bin/gpuconv synth "$OUT/corpus" -n 20 --size 512x512x64 --seed 0
.venv/bin/gpuconv convert "$OUT/corpus" --out "$OUT/dataset" --split "$OUT/corpus/split.csv" \
  --instances --no-progress
# one non-NRRD path: NIfTI label maps (named by classes.txt) and their CTs as DICOM series
.venv/bin/gpuconv synth "$OUT/corpus-dicom" -n 4 --size 512x512x32 --seed 1 --format nifti \
  --ct-format dicom
.venv/bin/gpuconv convert "$OUT/corpus-dicom/labels" --images "$OUT/corpus-dicom/ct" \
  --classes "$OUT/corpus-dicom/labels/classes.txt" --out "$OUT/dataset-dicom" --no-progress
echo "YOLO dataset ready: $(cd "$OUT/dataset" && pwd)/dataset.yaml"
