"""The contenders, each a function that converts one file once and reports its stage times.

A staged run returns ``{"seconds": {stage: s}, "components": n, "notes": [...]}`` with stages
from ``STAGES``; a stage a contender does not have is left out (shown as "-").  gpuconv's stages
are timed by calling its public pieces directly, not by parsing pipeline internals.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gpuconv.dataset.exams import exam_id
from gpuconv.bench.measure import Stopwatch

STAGES = ("read", "decode", "h2d", "label", "reduce", "write")
STAGED = ("gpuconv-cpu", "gpuconv-gpu", "published", "cc3d")
END_TO_END = ("gpuconv-cpu", "gpuconv-cpu-1w", "gpuconv-cpu-proc", "gpuconv-cpu-table",
              "gpuconv-gpu",
              "gpuconv-gpu-proc", "published", "gunzip-floor",
              "gunzip-floor-1w")


def _read_decode(path: Path, sw: Stopwatch):
    from gpuconv.io.nrrd_read import decode_layers, read_header
    with sw("read"):
        blob = path.read_bytes()
    with sw("decode"):
        hdr = read_header(path)
        layers = decode_layers(hdr, blob)
    return hdr, layers


def gpuconv_cpu(path: Path, scratch: Path, connectivity: int = 8) -> dict:
    from gpuconv.backends import CpuBackend
    from gpuconv.results.boxes import to_box_table
    from gpuconv.dataset.classes import build_class_map
    from gpuconv.writers.yolo import LabelDirs
    sw = Stopwatch()
    hdr, layers = _read_decode(path, sw)
    class_map = build_class_map([hdr])   # the header pre-pass; not a per-file stage
    dirs = LabelDirs(scratch)
    with sw("label"):
        comp = CpuBackend().slice_components(layers, connectivity)
    with sw("reduce"):
        boxes = to_box_table(comp, hdr, class_map)
    with sw("write"):
        dirs.write_exam(exam_id(path), "train", boxes, False)
    return {"seconds": sw.seconds, "cpu_seconds": sw.cpu_seconds, "components": len(comp),
            "notes": []}


_GPU_BACKEND = []


def _gpu_backend():
    """One GPU backend for all files, as ``convert`` has: its stream, pinned staging buffer and
    loaded kernels are set up once, not inside a file's timed stages."""
    from gpuconv.backends import get_backend
    if not _GPU_BACKEND:
        _GPU_BACKEND.append(get_backend("gpu"))
    return _GPU_BACKEND[0]


def gpuconv_gpu(path: Path, scratch: Path, connectivity: int = 8) -> dict:
    """Host stages with perf_counter; device stages with CUDA events on the backend's stream.

    h2d = the backend's upload (pinned staging copy + copy to the device); label = its
    ``label_slab`` (labelling, boxes and pixel counts on the device, ending with the copy of the
    small result arrays).  Volumes with several layers are timed as one backend call instead.
    """
    import cupy as cp
    from gpuconv.backends import gpu_driver as gk
    from gpuconv.backends.base import SliceComponents
    from gpuconv.results.boxes import to_box_table
    from gpuconv.dataset.classes import build_class_map
    from gpuconv.writers.yolo import LabelDirs
    backend = _gpu_backend()
    sw = Stopwatch()
    hdr, layers = _read_decode(path, sw)
    class_map = build_class_map([hdr])
    dirs = LabelDirs(scratch)
    notes = []
    if layers.shape[0] == 1:
        run = backend.runner()
        ev = [cp.cuda.Event() for _ in range(3)]
        with run.stream:
            ev[0].record(run.stream)
            dev = run.upload(layers[0].T)
            ev[1].record(run.stream)
            res = gk.label_slab(run, dev, connectivity == 8, 0)
            ev[2].record(run.stream)
            ev[2].synchronize()
        sw.seconds["h2d"] = cp.cuda.get_elapsed_time(ev[0], ev[1]) / 1000
        sw.seconds["label"] = cp.cuda.get_elapsed_time(ev[1], ev[2]) / 1000
        del dev
        if res is None:
            comp = SliceComponents.empty()
        else:
            comp = SliceComponents.concat([SliceComponents(
                layer=np.zeros(res.shape[1], np.int32), **dict(zip(gk.SLICE_ROWS, res)))])
    else:
        t0 = time.perf_counter()
        comp = backend.slice_components(layers, connectivity)
        sw.seconds["label"] = time.perf_counter() - t0
        notes.append("several layers: label = one backend call incl. transfers")
    with sw("reduce"):
        boxes = to_box_table(comp, hdr, class_map)
    with sw("write"):
        dirs.write_exam(exam_id(path), "train", boxes, False)
    pool = cp.get_default_memory_pool()
    return {"seconds": sw.seconds, "cpu_seconds": sw.cpu_seconds, "components": len(comp),
            "device_mb": pool.total_bytes() / 2**20, "notes": notes}


def sample_slices(n_slices: int, m: int | None) -> list[int] | None:
    """``m`` slice indices at the centres of ``m`` equal bins of the volume (None: all).

    Bin centres, not the end slices, which hold fewer lesions in the generated workloads.
    """
    if m is None or m >= n_slices:
        return None
    m = max(1, m)
    return sorted(set(((np.arange(m) + 0.5) * n_slices / m).astype(int).tolist()))


def published(path: Path, scratch: Path, sample: int | None = None) -> dict:
    """The published method (the COCA repository's nrrd_to_yolo.py, ``bench/published.py``)
    on one file; with ``sample``, its per-slice loop (label, reduce, write) runs on that many
    evenly spread slices and is scaled to all of them."""
    from gpuconv.bench import published as pub
    from gpuconv.writers.compat_coca import coca_exam_id
    sw = Stopwatch()
    with sw("decode"):
        data, segments = pub.read(path)
    timings: dict = {}
    slices = sample_slices(data.shape[2], sample)
    c0 = time.process_time()
    objects = pub.slice_boxes(data, segments, timings=timings, slices=slices)
    loop_cpu = time.process_time() - c0
    notes = ["read is inside nrrd.read (counted as decode)", "4-connectivity (scipy default)"]
    scale = 1.0
    if slices is not None:
        scale = data.shape[2] / len(slices)
        notes.append(f"label/reduce/write timed on {len(slices)} of {data.shape[2]} slices "
                     f"(evenly spread) and scaled x{scale:.3g}")
    with sw("write"):
        pub.write(objects, data.shape, scratch, coca_exam_id(path))
    sw.seconds["label"] = timings["label"] * scale
    sw.seconds["reduce"] = timings["reduce"] * scale
    sw.seconds["write"] *= scale
    # CPU time of the loop, split between label and reduce like its wall time
    share = timings["label"] / max(timings["label"] + timings["reduce"], 1e-12)
    sw.cpu_seconds["label"] = loop_cpu * scale * share
    sw.cpu_seconds["reduce"] = loop_cpu * scale * (1 - share)
    sw.cpu_seconds["write"] *= scale
    n = sum(len(v) for v in objects.values())
    return {"seconds": sw.seconds, "cpu_seconds": sw.cpu_seconds,
            "components": int(round(n * scale)),
            "n_slices": data.shape[2], "sampled_slices": None if slices is None else len(slices),
            "notes": notes}


def cc3d_label(path: Path, scratch: Path, connectivity: int = 8) -> dict:
    """Labelling stage only: cc3d 2D on every slice (multi-label, so equal-value linking like
    gpuconv), connectivity 8.  Boxes and writing are not part of this contender."""
    import cc3d
    from gpuconv.io.nrrd_read import read_volume
    layers = read_volume(path).layers
    sw = Stopwatch()
    n = 0
    with sw("label"):
        for layer in layers:
            for k in range(layer.shape[2]):
                _, count = cc3d.connected_components(layer[:, :, k], connectivity=connectivity,
                                                     return_N=True)
                n += count
    return {"seconds": sw.seconds, "cpu_seconds": sw.cpu_seconds, "components": int(n),
            "notes": ["labelling stage only (2D per slice, connectivity 8)"]}


STAGED_FUNCS = {"gpuconv-cpu": gpuconv_cpu, "gpuconv-gpu": gpuconv_gpu,
                "published": published, "cc3d": cc3d_label}


# ---- end to end over a corpus ------------------------------------------------------------

def e2e_convert(paths: list[Path], out: Path, workers: int, backend: str,
                pool: str = "auto", fmt: str = "boxes") -> dict:
    """gpuconv.convert over the corpus folder with ``workers`` (and ``pool``, ``fmt``) set."""
    import gpuconv
    summary = gpuconv.convert([str(paths[0].parent)], out, workers=workers, backend=backend,
                              progress=False, pool=pool, fmt=fmt)
    if summary.get("failed") or summary.get("files") != len(paths):
        raise RuntimeError(f"convert failed on the corpus: {summary.get('failures')}")
    return {"boxes": summary.get("boxes"), "stage_seconds": summary.get("stage_seconds"),
            "pool": summary.get("pool")}


def e2e_published(paths: list[Path], out: Path) -> dict:
    from gpuconv.bench import published as pub
    out.mkdir(parents=True, exist_ok=True)
    return {"files": sum(pub.convert_file(p, out) for p in paths)}


def gunzip_jobs(paths: list[Path]) -> list[tuple[Path, int, int]]:
    """(path, payload offset, decoded size) per file, found before the clock starts."""
    from gpuconv.io.nrrd_read import read_header
    jobs = []
    for p in paths:
        hdr = read_header(p)
        if hdr.encoding.lower() not in ("gzip", "gz") or hdr.data_path != p:
            raise ValueError(f"{p}: the gunzip floor needs attached gzip payloads")
        jobs.append((p, hdr.data_offset, hdr.n_bytes))
    return jobs


def e2e_gunzip(jobs, workers: int) -> dict:
    """Read each file and gunzip its payload with gpuconv's fastest decoder; nothing else."""
    from gpuconv.io.decode import gunzip

    def one(job):
        p, offset, expected = job
        return len(gunzip(memoryview(p.read_bytes())[offset:], expected))
    if workers == 1:
        n = sum(one(j) for j in jobs)
    else:
        with ThreadPoolExecutor(workers) as pool:
            n = sum(pool.map(one, jobs))
    return {"bytes": n}


def warm_up_numba() -> float:
    """Compile (or load from cache) the CPU kernels on a tiny volume; returns seconds taken."""
    from gpuconv.backends import CpuBackend
    t0 = time.perf_counter()
    tiny = np.zeros((1, 8, 8, 2), np.uint8, order="F")
    tiny[0, 1:3, 2:4, 0] = 1
    for conn in (4, 8):
        CpuBackend().slice_components(tiny, conn)
    return time.perf_counter() - t0
