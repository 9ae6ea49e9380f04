"""GPU labelling of a volume already on the device: gpuconv's kernels vs cuCIM / cupyx label.

    python benchmarks/gpu_label_ondevice.py --json out.json

The issue's target: labelling + boxes + voxel counts of a 512x512x300 volume already on the
device in under 1 ms on an H100.  Each row is timed with ``cupyx.profiler.benchmark`` (CUDA
events around each call, after warm-up), so host-side launch overhead and the syncs our driver
needs (the occupied-row count, the component count) are inside the time.  The references:

- ``copy``: one device-to-device copy of the volume, the bandwidth floor of a pass over it;
- ``cupyx-label-2d``: ``cupyx.scipy.ndimage.label`` of the binary mask with a structure that has
  no links across slices (per-slice 2D components in one call, all classes merged, no boxes);
- ``cucim-label-3d``: ``cucim.skimage.measure.label`` of the label map (3D, links equal values),
  labels only, as the issue quotes it ("cuCIM's label alone ... 4-7 ms").
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _stats(result) -> dict:
    g = np.asarray(result.gpu_times).ravel() * 1e3
    c = np.asarray(result.cpu_times).ravel() * 1e3
    return {"gpu_ms_median": round(float(np.median(g)), 4), "gpu_ms_min": round(float(g.min()), 4),
            "gpu_ms_max": round(float(g.max()), 4), "cpu_ms_median": round(float(np.median(c)), 4),
            "n": int(g.size)}


def volumes(seed: int, quick: bool):
    from gpuconv.bench.workloads import _sub_rng, sparse_calcium, specks, vessel_tree
    if quick:
        yield "sparse-96x96x16", sparse_calcium(_sub_rng(seed, "q"), (96, 96, 16), 0.003)
        return
    yield "sparse-512x512x300", sparse_calcium(_sub_rng(seed, "s300"), (512, 512, 300), 0.003)
    yield "sparse-512x512x64", sparse_calcium(_sub_rng(seed, "s64"), (512, 512, 64), 0.003)
    yield "vessel-512x512x128", vessel_tree(_sub_rng(seed, "v"), (512, 512, 128), 0.05)
    yield "specks-1e5", specks(_sub_rng(seed, "k"), (512, 512, 64), 100_000)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)

    import cupy as cp
    from cupyx.profiler import benchmark

    from gpuconv.backends import get_backend
    from gpuconv.backends import gpu_driver as gk

    backend = get_backend("gpu")
    run = backend.runner()
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    doc = {"gpu": name, "cupy": cp.__version__, "repeat": args.repeat, "rows": [],
           "fast_launch": run.fast_launch}
    try:
        import cucim
        from cucim.skimage.measure import label as cucim_label
        doc["cucim"] = cucim.__version__
    except Exception as exc:  # noqa: BLE001 - reference only
        cucim_label = None
        doc["cucim"] = f"unavailable ({type(exc).__name__}: {exc})"
    from cupyx.scipy import ndimage as cndi
    struct2d = np.zeros((3, 3, 3), bool)
    struct2d[1] = True  # (K, J, I) order: links within a slice only, 8-connected

    for wname, vol in volumes(args.seed, args.quick):
        kji = np.ascontiguousarray(vol.T)            # (K, J, I) as the backend holds it
        with run.stream:
            dev = cp.asarray(kji)
            run.stream.synchronize()
            rows = {}

            def ours_2d():
                return gk.label_slab(run, dev, True, 0)

            res = ours_2d()
            n2d = 0 if res is None else res.shape[1]
            rows["gpuconv 2D components + boxes + pixel counts (to host)"] = benchmark(
                ours_2d, n_repeat=args.repeat, n_warmup=3)
            if run.fast_launch:   # the same kernels launched by Numba's dispatcher (kernel_abi)
                run.fast_launch = False
                rows["gpuconv 2D, kernels launched by Numba's dispatcher"] = benchmark(
                    ours_2d, n_repeat=args.repeat, n_warmup=3)
                run.fast_launch = True

            def ours_3d():
                compact = gk.compact_rows(run, dev)
                if compact is None:
                    return None
                rows_, rowmap, vr, parent = compact
                rows_v, vr_v, parent_v = run.view(rows_), run.view(vr), run.view(parent)
                run.launch(gk.union_volume, parent.size, vr_v, rows_v, rowmap, dev.shape[1], 26,
                           parent_v)
                slot, table = gk._component_table(run, vr_v, parent_v, 2, 7,
                                                  len(gk.VOLUME_ROWS))
                run.launch(gk.reduce_volume, parent.size, vr_v, rows_v, dev.shape[1], parent_v,
                           slot, table)
                return run.to_host(table)

            res3 = ours_3d()
            n3d = 0 if res3 is None else res3.shape[1]
            rows["gpuconv 3D instances (26) + boxes + voxel counts (to host)"] = benchmark(
                ours_3d, n_repeat=args.repeat, n_warmup=3)
            rows["copy (bandwidth floor)"] = benchmark(lambda: dev.copy(), n_repeat=args.repeat,
                                                       n_warmup=3)
            mask = dev != 0
            rows["cupyx.scipy.ndimage.label 2D structure, binary, labels only"] = benchmark(
                lambda: cndi.label(mask, structure=struct2d), n_repeat=args.repeat, n_warmup=3)
            if cucim_label is not None:
                rows["cucim.skimage.measure.label 3D, equal values, labels only"] = benchmark(
                    lambda: cucim_label(dev, connectivity=3), n_repeat=args.repeat, n_warmup=3)
        entry = {"workload": wname, "shape_ijk": list(vol.shape),
                 "foreground": round(float(np.count_nonzero(vol)) / vol.size, 5),
                 "components_2d": n2d, "instances_3d": n3d,
                 "timings": {k: _stats(v) for k, v in rows.items()}}
        doc["rows"].append(entry)
        print(f"== {wname}: {entry['components_2d']} 2D components, {n3d} 3D instances")
        for k, v in entry["timings"].items():
            print(f"   {v['gpu_ms_median']:9.3f} ms (min {v['gpu_ms_min']:.3f})  {k}")
        dev = mask = None  # noqa: F841 - free the device memory before the next volume
        cp.get_default_memory_pool().free_all_blocks()
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
