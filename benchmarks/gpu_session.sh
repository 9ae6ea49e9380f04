#!/usr/bin/env bash
# Everything a GPU session should run, in one command on the device machine (see
# ../shared/gpu/README.md): the GPU tests, CPU-vs-GPU parity of convert (synthetic corpus and the
# Slicer files) and of agree, labelling of volumes already on the device, the hybrid pool
# against the CPU process pool (benchmarks/hybrid_pool.py), and the benchmark.
# Everything lands in a work folder that is packed at the end into $OUT/gpu-session.tar.gz (the
# device tool brings back at most 8 files) or kept in benchmarks/results/gpu-run without $OUT.
# On the build machine first: bash ../shared/gpu/fetch-wheels.sh, then call the device with
# carry=[".whl"] and the command `MACHINE=h100-16core bash benchmarks/gpu_session.sh`.
# Each step is time-boxed; the benchmark gets what is left of DEADLINE seconds (default 560).
set -uo pipefail
export PYTHONUNBUFFERED=1
START=$(date +%s)
DEADLINE=${DEADLINE:-560}
if [ -n "${OUT:-}" ]; then R=$(mktemp -d); else R=benchmarks/results/gpu-run; mkdir -p "$R"; fi
pack() { [ -n "${OUT:-}" ] && tar -czf "$OUT/gpu-session.tar.gz" -C "$R" . ; }
trap pack EXIT
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
{ nvidia-smi; python3 -c "import cupy, numba, numpy; print('cupy', cupy.__version__, 'numba', \
numba.__version__, 'numpy', numpy.__version__)"; } > "$R/device.txt" 2>&1
step() { echo "== $1 ($(( $(date +%s) - START )) s)"; }
step tests
timeout "${T_TESTS:-150}" python3 -m pytest -m gpu -q -rs -p no:cacheprovider \
  --continue-on-collection-errors > "$R/pytest-gpu.log" 2>&1
tail -3 "$R/pytest-gpu.log"; grep -E "^(FAILED|ERROR)" "$R/pytest-gpu.log" | head -20
timeout 120 python3 -m pytest -q -x -p no:cacheprovider tests/test_geometry.py \
  tests/test_slicerio.py 2>&1 | tail -1 | tee -a "$R/pytest-gpu.log"
step parity
timeout "${T_PARITY:-90}" python3 benchmarks/gpu_parity.py --json "$R/gpu_parity.json" \
  > "$R/parity.log" 2>&1; echo "convert parity exit $?"; grep -E '"parity"|"differences"' "$R/parity.log"
step label-on-device
timeout "${T_LABEL:-90}" python3 benchmarks/gpu_label_ondevice.py --json "$R/label_ondevice.json" \
  > "$R/label_ondevice.log" 2>&1; cat "$R/label_ondevice.log" | tail -30
step agree
timeout "${T_AGREE:-90}" python3 benchmarks/agree_parity.py --n "${AGREE_N:-4}" \
  --json "$R/agree_parity.json" > "$R/agree.log" 2>&1; echo "agree parity exit $?"
grep -E '"parity"|"seconds"|"cpu"|"gpu"|max_abs|cli_returncode' "$R/agree.log"
step hybrid-pool
# issue 18: CPU worker processes + one GPU labeller process (--pool hybrid --backend gpu) against
# the CPU process pool (--pool process --backend cpu), end to end, on a sparse corpus and a dense
# multi-organ one (100 labels, 35 %); label files compared byte for byte between the two
LEFT=$(( DEADLINE - ($(date +%s) - START) ))
T=$(( ${T_HYBRID:-150} < LEFT - 60 ? ${T_HYBRID:-150} : LEFT - 60 ))
if [ "${SKIP_HYBRID:-0}" = 1 ] || [ "$T" -lt 40 ]; then echo "hybrid pool skipped (${T} s)"; else
  timeout "$T" python3 benchmarks/hybrid_pool.py --json "$R/hybrid_pool.json" \
    --budget $(( T - 10 )) ${HYBRID_ARGS:-} > "$R/hybrid_pool.log" 2>&1; echo "hybrid pool exit $?"
  tail -4 "$R/hybrid_pool.log"
fi
[ "${SKIP_BENCH:-0}" = 1 ] && exit 0
LEFT=$(( DEADLINE - ($(date +%s) - START) ))
if [ "$LEFT" -lt 60 ]; then echo "bench skipped: only ${LEFT} s left of DEADLINE"; exit 0; fi
step "bench (${LEFT} s left)"
timeout "$LEFT" python3 -m gpuconv bench --machine "${MACHINE:-gpu}" --out "$R/bench" \
  ${BENCH_ARGS:-} > "$R/bench.log" 2>&1; echo "bench exit $?"
tail -8 "$R/bench.log"
