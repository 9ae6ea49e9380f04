"""CPU vs GPU parity and timings, for a machine with a CUDA device.

    python benchmarks/gpu_parity.py          # 20 synthetic 512x512x64 exams + Slicer files
    python benchmarks/gpu_parity.py --n 4 --shape 128 128 32 --backends cpu cpu   # dry run, no GPU

Converts the synthetic corpus and slicerio's Slicer-written files with each backend, compares
every output file byte for byte (dataset.yaml after replacing the output path, manifest.jsonl as
a set of lines since its order is completion order; summary.json holds timings and is compared
only on its counts), compares the 3D instances CSV of ``scan_instances``, and compares the backends'
``slice_components`` / ``instances_3d`` on every volume directly.  Prints and writes JSON with the
device, versions and timings; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import fields
from pathlib import Path

import numpy as np

SUMMARY_KEYS = ("files", "slices", "slices_with_boxes", "label_files", "boxes", "failed",
                "classes", "boxes_per_class", "exams_per_split")


def compare_trees(a: Path, b: Path) -> list[str]:
    """Differences between two ``convert`` outputs (empty when they match)."""
    a, b = Path(a), Path(b)
    files_a = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    diffs = [f"only in {a}: {f}" for f in sorted(files_a - files_b)]
    diffs += [f"only in {b}: {f}" for f in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        x, y = (a / rel).read_bytes(), (b / rel).read_bytes()
        if rel == "summary.json":
            sa, sb = json.loads(x), json.loads(y)
            bad = [k for k in SUMMARY_KEYS if sa.get(k) != sb.get(k)]
            if bad:
                diffs.append(f"summary.json differs in {bad}")
            continue
        if rel == "dataset.yaml":
            x = x.replace(str(a.resolve()).encode(), b"OUT").replace(str(a).encode(), b"OUT")
            y = y.replace(str(b.resolve()).encode(), b"OUT").replace(str(b).encode(), b"OUT")
        if rel.endswith(".jsonl"):
            x, y = sorted(x.splitlines()), sorted(y.splitlines())
        if x != y:
            diffs.append(f"content differs: {rel}")
    return diffs


def _table(obj) -> np.ndarray:
    """A backend result as an int64 table in canonical (lexicographic) row order."""
    cols = [np.asarray(getattr(obj, f.name), np.int64) for f in fields(obj)]
    t = np.stack(cols, 1) if cols and len(cols[0]) else np.zeros((0, len(cols)), np.int64)
    return t[np.lexsort(t.T[::-1])] if len(t) else t


def environment() -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine(),
            "cpus": os.cpu_count()}
    import numba
    info["numba"] = numba.__version__
    try:
        from importlib.metadata import version
        info["numba_cuda"] = version("numba-cuda")
    except Exception:
        pass
    try:
        import cupy
        info["cupy"] = cupy.__version__
        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(0)
        name = props["name"]
        info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
        info["gpu_memory_gib"] = round(props["totalGlobalMem"] / 2**30, 1)
        info["cuda_driver"] = rt.driverGetVersion()
        info["cuda_runtime"] = rt.runtimeGetVersion()
    except Exception as exc:
        info["gpu"] = f"none ({type(exc).__name__}: {exc})"
    return info


def slicer_files() -> list[Path]:
    try:
        import slicerio
    except ImportError:
        return []
    data = Path(slicerio.__file__).parent / "data"
    return [p for p in (data / "Segmentation.seg.nrrd", data / "SegmentationOverlapping.seg.nrrd")
            if p.exists()]


def direct_compare(paths, backends, connectivity=8, connectivity3d=26) -> tuple[list, dict]:
    """Run each backend's calls on every decoded volume; time them (after one warm-up call)."""
    from gpuconv.backends import get_backend
    from gpuconv.io.nrrd_read import read_volume
    bes = [get_backend(n) for n in backends]
    tags = [f"{i}_{n}" for i, n in enumerate(backends)]
    diffs, seconds = [], {f"{t}_{what}": 0.0 for t in tags for what in ("2d", "3d")}
    vols = [(p, read_volume(p).layers) for p in paths]
    for be in bes:  # warm-up: JIT compilation is not what we time
        be.slice_components(vols[0][1], connectivity)
        be.instances_3d(vols[0][1], connectivity3d)
    for p, layers in vols:
        tables = {}
        for name, be in zip(tags, bes):
            t0 = time.perf_counter()
            c = be.slice_components(layers, connectivity)
            t1 = time.perf_counter()
            inst = be.instances_3d(layers, connectivity3d)
            t2 = time.perf_counter()
            seconds[f"{name}_2d"] += t1 - t0
            seconds[f"{name}_3d"] += t2 - t1
            tables.setdefault("2d", []).append(_table(c))
            tables.setdefault("3d", []).append(_table(inst))
        for what, ts in tables.items():
            if not all(np.array_equal(ts[0], t) for t in ts[1:]):
                diffs.append(f"{what} components differ: {p.name}")
    return diffs, {k: round(v, 4) for k, v in seconds.items()}


def warm_up(backends, tags) -> dict:
    """First calls compile the kernels (uint8; other dtypes compile on first use)."""
    from gpuconv.backends import get_backend
    layers = np.zeros((1, 16, 12, 3), np.uint8)
    layers[0, 2:5, 3:6, 1] = 1
    out = {}
    for tag, name in zip(tags, backends):
        be = get_backend(name)
        t0 = time.perf_counter()
        be.slice_components(layers, 8)
        be.instances_3d(layers, 26)
        out[tag] = round(time.perf_counter() - t0, 3)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20, help="synthetic exams")
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 64))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="/tmp/gpuconv_parity")
    ap.add_argument("--backends", nargs=2, default=("cpu", "gpu"))
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "gpu_parity.json"))
    args = ap.parse_args(argv)

    import shutil

    import gpuconv
    from gpuconv.results.instances import instances_csv_text, scan_instances
    from gpuconv.dataset.synth import synth_corpus

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    synth = out / "synth"
    synth_corpus(synth, n=args.n, shape=tuple(args.shape), seed=args.seed)
    corpora = {"synthetic": ([str(synth)], synth / "split.csv")}
    for p in slicer_files():
        corpora[p.name] = ([str(p)], None)

    report = {"environment": environment(), "backends": list(args.backends),
              "synthetic": {"n": args.n, "shape": list(args.shape), "seed": args.seed},
              "convert_seconds": {}, "instances_seconds": {}, "differences": []}
    tags = [f"{i}_{n}" for i, n in enumerate(args.backends)]  # "cpu cpu" dry runs stay apart
    report["warmup_seconds"] = warm_up(args.backends, tags)  # JIT compilation, not timed below
    for cname, (inputs, split) in corpora.items():
        for conn in (8, 4):
            outs = []
            for tag, be in zip(tags, args.backends):
                dest = out / "convert" / f"{cname}_c{conn}_{tag}"
                t0 = time.perf_counter()
                s = gpuconv.convert(inputs, dest, backend=be, split_csv=split, connectivity=conn,
                                    workers=args.workers, progress=False)
                report["convert_seconds"][f"{cname}_c{conn}_{tag}"] = round(
                    time.perf_counter() - t0, 3)
                if s["failed"]:
                    report["differences"].append(f"{cname} {tag}: {s['failures']}")
                outs.append(dest)
            report["differences"] += [f"{cname} c{conn}: {d}" for d in compare_trees(*outs)]
        csvs = []
        for tag, be in zip(tags, args.backends):
            t0 = time.perf_counter()
            c = scan_instances(inputs, backend=be, split_csv=split, workers=args.workers)
            report["instances_seconds"][f"{cname}_{tag}"] = round(time.perf_counter() - t0, 3)
            csvs.append(instances_csv_text(c.tables, c.class_names))
        if csvs[0] != csvs[1]:
            report["differences"].append(f"{cname}: instances CSV differs")

    paths = sorted(synth.glob("*.seg.nrrd")) + slicer_files()
    diffs, secs = direct_compare(paths, args.backends)
    report["differences"] += diffs
    report["label_seconds_excluding_io"] = secs
    report["volumes"] = len(paths)
    report["parity"] = not report["differences"]

    text = json.dumps(report, indent=2)
    print(text)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(text + "\n")
    return 0 if report["parity"] else 1


if __name__ == "__main__":
    sys.exit(main())
