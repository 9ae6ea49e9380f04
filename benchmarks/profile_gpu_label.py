"""Where the host time of one on-device labelling call goes (cProfile over repeated calls).

    python benchmarks/profile_gpu_label.py [--slices 64] [--calls 200]

The on-device timings (gpu_label_ondevice.py) show CPU time = GPU time and a fixed ~1.7 ms per
call whatever the volume size: the call is bound by the host (kernel launches, syncs).  This
prints the functions that time is spent in.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args(argv)
    import cupy as cp
    import numpy as np

    from gpuconv.backends import get_backend
    from gpuconv.backends import gpu_driver as gk
    from gpuconv.bench.workloads import _sub_rng, sparse_calcium

    vol = sparse_calcium(_sub_rng(0, "prof"), (512, 512, args.slices), 0.003)
    run = get_backend("gpu").runner()
    with run.stream:
        dev = cp.asarray(np.ascontiguousarray(vol.T))
        for _ in range(5):
            gk.label_slab(run, dev, True, 0)
        run.stream.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.calls):
            gk.label_slab(run, dev, True, 0)
        run.stream.synchronize()
        per_call = (time.perf_counter() - t0) / args.calls
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.calls):
            gk.label_slab(run, dev, True, 0)
        run.stream.synchronize()
        prof.disable()
    print(f"{per_call * 1e3:.3f} ms per call without the profiler ({args.calls} calls)")
    for key in ("tottime", "cumulative"):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats(key).print_stats(28)
        print(s.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
