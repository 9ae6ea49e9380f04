"""Why the bench's per-file GPU label stage reads longer than gpu_label_ondevice.py: time the
same ``label_slab`` call (CUDA events, as the bench does) in four situations.

    python benchmarks/gpu_label_after_upload.py

- ``resident``: back to back on a volume already on the device (what gpu_label_ondevice times);
- ``after upload``: right after this volume's upload, as in the bench;
- ``after idle``: on the resident volume after the GPU sat idle for 40 ms (a file's host work);
- ``after upload+idle``: a fresh upload after 40 ms idle, then the label.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main() -> int:
    import cupy as cp

    from gpuconv.backends import get_backend
    from gpuconv.backends import gpu_driver as gk
    from gpuconv.bench.workloads import _sub_rng, sparse_calcium

    vol = sparse_calcium(_sub_rng(0, "s300"), (512, 512, 320), 0.003)
    kji = vol.T
    run = get_backend("gpu").runner()
    out = {}
    with run.stream:
        dev = run.upload(kji)
        for _ in range(3):
            gk.label_slab(run, dev, True, 0)
        ev = [cp.cuda.Event() for _ in range(2)]

        def timed(fresh: bool, idle: float) -> float:
            nonlocal dev
            run.stream.synchronize()
            if idle:
                time.sleep(idle)
            if fresh:
                dev = run.upload(kji)
            ev[0].record(run.stream)
            gk.label_slab(run, dev, True, 0)
            ev[1].record(run.stream)
            ev[1].synchronize()
            return cp.cuda.get_elapsed_time(ev[0], ev[1])

        for name, fresh, idle in (("resident", False, 0), ("after upload", True, 0),
                                  ("after idle", False, 0.04), ("after upload+idle", True, 0.04)):
            ms = [timed(fresh, idle) for _ in range(15)]
            out[name] = {"median_ms": round(float(np.median(ms)), 3),
                         "min_ms": round(float(np.min(ms)), 3)}
            print(f"{name:>20}: {out[name]['median_ms']:.3f} ms (min {out[name]['min_ms']:.3f})")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
