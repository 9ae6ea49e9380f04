#!/usr/bin/env bash
# Everything a GPU session should run, in one command on the device machine (see
# ../shared/gpu/README.md): the GPU tests, CPU-vs-GPU parity on the synthetic corpus and the
# Slicer files, and the benchmark.  Logs and JSON land in $OUT (the device tool copies it back)
# or in benchmarks/results/gpu-run.  On the build machine first: bash ../shared/gpu/fetch-wheels.sh
# then call the device with carry=[".whl"] and the command `bash benchmarks/gpu_session.sh`.
set -uo pipefail
export PYTHONUNBUFFERED=1
R=${OUT:-benchmarks/results/gpu-run}
mkdir -p "$R"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{ nvidia-smi; python3 -c "import cupy, numba; print('cupy', cupy.__version__, 'numba', numba.__version__)"; } \
  > "$R/device.txt" 2>&1
# each step is time-boxed so that a hang in one still brings the others' results back
T_TESTS=${T_TESTS:-240} T_PARITY=${T_PARITY:-150} T_LABEL=${T_LABEL:-120} T_BENCH=${T_BENCH:-420}
timeout "$T_TESTS" python3 -m pytest -m gpu -q -rs -p no:cacheprovider --continue-on-collection-errors \
  2>&1 | tee "$R/pytest-gpu.log"
timeout 120 python3 -m pytest -q -x -p no:cacheprovider tests/test_geometry.py tests/test_slicerio.py 2>&1 \
  | tail -3 >> "$R/pytest-gpu.log"
timeout "$T_PARITY" python3 benchmarks/gpu_parity.py --json "$R/gpu_parity.json" > "$R/parity.log" 2>&1
tail -25 "$R/parity.log"
timeout "$T_LABEL" python3 benchmarks/gpu_label_ondevice.py --json "$R/label_ondevice.json" 2>&1 \
  | tee "$R/label_ondevice.log"
[ "${SKIP_BENCH:-0}" = 1 ] && exit 0
timeout "$T_BENCH" python3 -m gpuconv bench --machine "${MACHINE:-gpu}" --out "$R" ${BENCH_ARGS:-} 2>&1 \
  | tee "$R/bench.log"
