#!/usr/bin/env bash
# One command: set up, generate the embedded synthetic corpus (labels + matching CTs), convert
# it into a dataset WITH images (what Ultralytics trains on), check it, say where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-demo-out}
.venv/bin/gpuconv synth "$OUT/corpus" -n 20 --size 512x512x32 --seed 0     # + $OUT/corpus/ct
.venv/bin/gpuconv convert "$OUT/corpus" --images "$OUT/corpus/ct" --out "$OUT/dataset" \
  --split "$OUT/corpus/split.csv" --format polygons --background-fraction 0.1 --instances \
  --no-progress
# one non-NRRD path: NIfTI label maps (named by classes.txt) and their CTs as DICOM series
.venv/bin/gpuconv synth "$OUT/corpus-dicom" -n 4 --size 512x512x32 --seed 1 --format nifti \
  --ct-format dicom
.venv/bin/gpuconv convert "$OUT/corpus-dicom/labels" --images "$OUT/corpus-dicom/ct" \
  --classes "$OUT/corpus-dicom/labels/classes.txt" --out "$OUT/dataset-dicom" --no-progress
# "ready" only for a dataset Ultralytics can train: images in train and val, each label file
# beside its image (the folders resolved as Ultralytics' check_det_dataset resolves them)
for ds in "$OUT/dataset" "$OUT/dataset-dicom"; do
  .venv/bin/python - "$ds/dataset.yaml" <<'EOF'
import sys
from gpuconv.writers.yolo import dataset_problems
problems = dataset_problems(sys.argv[1])
for p in problems:
    print(f"error: {sys.argv[1]}: not trainable: {p}", file=sys.stderr)
sys.exit(1 if problems else 0)
EOF
done
echo "YOLO dataset ready (images + polygons): $(cd "$OUT/dataset" && pwd)/dataset.yaml"
echo "  train it: yolo segment train data=$(cd "$OUT/dataset" && pwd)/dataset.yaml model=yolov8n-seg.pt"
