"""3D instances of an exam as a table (class, voxels, mm³, bounds, centroids) and its files.

Conventions (tested in tests/test_instances3d.py):
- an instance is a 3D connected component of one label value in one layer (see
  ``backends.base.Instances3D``; connectivity 26 by default);
- ``volume_mm3`` = voxels x |det D|, D = the spatial ``space directions`` (rows = step vectors of
  axes i, j, k), so anisotropic and oblique grids are exact; voxel counts are exact integers;
- bounds ``i0 i1 j0 j1 k0 k1`` are inclusive voxel indices; ``slices`` = k1 - k0 + 1 (a
  connected component occupies every slice between its first and last one);
- centroid in voxel indices = mean index of the member voxels; in patient (space) coordinates
  = origin + D^T . centroid (the file's ``space``, e.g. LPS, in mm);
- instance ids run 1..n per exam in the canonical order class, k0, j0, i0, k1, j1, i1, voxels,
  index sums, layer, value - a function of the voxels only, so every backend gives the same ids;
- instances.csv is sorted by exam, class id, instance id; floats have six decimals.
"""

from __future__ import annotations

import csv
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .backends.base import Instances3D
from .boxes import class_ids
from .classes import ClassMap
from .nrrdio import LabelVolume, VolumeHeader
from .writers.atomic import write_bytes_atomic, write_text_atomic

COLUMNS = ("exam", "split", "class_id", "class_name", "instance_id", "layer", "label_value",
           "voxels", "volume_mm3", "i0", "i1", "j0", "j1", "k0", "k1",
           "centroid_i", "centroid_j", "centroid_k", "centroid_x", "centroid_y", "centroid_z",
           "slices")
CSV_NAME = "instances.csv"
PARQUET_NAME = "instances.parquet"
FLOAT_FORMAT = "{:.6f}"


@dataclass
class InstanceTable:
    """The 3D instances of one exam, in canonical order (row n has instance id n + 1)."""

    exam: str
    split: str
    cls: np.ndarray           # int32 class id
    layer: np.ndarray         # int32
    value: np.ndarray         # int64 label value
    voxels: np.ndarray        # int64
    volume_mm3: np.ndarray    # float64
    bounds: np.ndarray        # (n, 6) int32: i0 i1 j0 j1 k0 k1, inclusive
    centroid_ijk: np.ndarray  # (n, 3) float64, voxel indices
    centroid_xyz: np.ndarray  # (n, 3) float64, patient (space) coordinates in mm
    voxel_volume_mm3: float = 0.0

    def __len__(self) -> int:
        return len(self.voxels)

    @property
    def instance_id(self) -> np.ndarray:
        return np.arange(1, len(self) + 1, dtype=np.int32)

    @property
    def slices(self) -> np.ndarray:
        return (self.bounds[:, 5] - self.bounds[:, 4] + 1).astype(np.int32)


def instance_rows(exam: str, split: str, inst: Instances3D, hdr: VolumeHeader,
                  class_map: ClassMap) -> InstanceTable:
    """One exam's instance table: class ids (same rule as the YOLO boxes), canonical order,
    volumes and centroids.  Raises InputError for label values no segment declares."""
    cls = class_ids(inst.layer, inst.value, hdr, class_map)
    order = np.lexsort((inst.value, inst.layer, inst.sum_i, inst.sum_j, inst.sum_k,
                        inst.voxels, inst.i1, inst.j1, inst.k1, inst.i0, inst.j0, inst.k0, cls))
    inst = inst.take(order)
    voxels = inst.voxels.astype(np.int64)
    vv = hdr.voxel_volume_mm3
    n = len(voxels)
    c_ijk = (np.stack([inst.sum_i, inst.sum_j, inst.sum_k], axis=1).reshape(n, 3)
             / np.maximum(voxels, 1)[:, None])
    d = np.asarray(hdr.directions, np.float64)
    # element-wise (no BLAS) so the result does not depend on a library's summation order
    c_xyz = (np.asarray(hdr.origin, np.float64)[None, :] + c_ijk[:, 0:1] * d[0]
             + c_ijk[:, 1:2] * d[1] + c_ijk[:, 2:3] * d[2])
    bounds = np.stack([inst.i0, inst.i1, inst.j0, inst.j1, inst.k0, inst.k1],
                      axis=1).astype(np.int32).reshape(n, 6)
    return InstanceTable(exam=exam, split=split, cls=cls[order].astype(np.int32),
                         layer=inst.layer.astype(np.int32), value=inst.value.astype(np.int64),
                         voxels=voxels, volume_mm3=voxels * vv, bounds=bounds,
                         centroid_ijk=c_ijk, centroid_xyz=c_xyz, voxel_volume_mm3=vv)


def instances_for_volume(vol: LabelVolume, exam: str, split: str, class_map: ClassMap,
                         backend, connectivity3d: int = 26) -> InstanceTable:
    """Label one decoded volume in 3D on ``backend`` and build its table (pipeline hook)."""
    inst = backend.instances_3d(vol.layers, connectivity3d)
    return instance_rows(exam, split, inst, vol.header, class_map)


def _class_name(names: list[str], cid: int) -> str:
    return names[cid] if 0 <= cid < len(names) else ""


def _sorted(tables) -> list[InstanceTable]:
    return sorted(tables, key=lambda t: t.exam)


def instances_csv_text(tables, class_names: list[str]) -> str:
    """instances.csv content: header + one row per instance, sorted by exam, class, id."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    f = FLOAT_FORMAT.format
    for t in _sorted(tables):
        if not len(t):
            continue
        names = [_class_name(class_names, c) for c in t.cls.tolist()]
        for r, (cid, name, layer, value, vox, vol, b, cijk, cxyz, sl) in enumerate(zip(
                t.cls.tolist(), names, t.layer.tolist(), t.value.tolist(), t.voxels.tolist(),
                t.volume_mm3.tolist(), t.bounds.tolist(), t.centroid_ijk.tolist(),
                t.centroid_xyz.tolist(), t.slices.tolist())):
            w.writerow([t.exam, t.split, cid, name, r + 1, layer, value, vox, f(vol), *b,
                        *(f(x) for x in cijk), *(f(x) for x in cxyz), sl])
    return buf.getvalue()


def instances_arrow(tables, class_names: list[str]):
    """The same rows as a pyarrow Table (typed columns, full float precision)."""
    import pyarrow as pa
    ts = [t for t in _sorted(tables)]
    cat = (lambda get, dt: np.concatenate([get(t) for t in ts]).astype(dt) if ts
           else np.zeros(0, dt))
    cls = cat(lambda t: t.cls, np.int32)
    bounds = (np.concatenate([t.bounds for t in ts]) if ts else np.zeros((0, 6), np.int32))
    cijk = np.concatenate([t.centroid_ijk for t in ts]) if ts else np.zeros((0, 3))
    cxyz = np.concatenate([t.centroid_xyz for t in ts]) if ts else np.zeros((0, 3))
    cols = {
        "exam": pa.array([t.exam for t in ts for _ in range(len(t))], pa.string()),
        "split": pa.array([t.split for t in ts for _ in range(len(t))], pa.string()),
        "class_id": pa.array(cls),
        "class_name": pa.array([_class_name(class_names, c) for c in cls.tolist()], pa.string()),
        "instance_id": pa.array(cat(lambda t: t.instance_id, np.int32)),
        "layer": pa.array(cat(lambda t: t.layer, np.int32)),
        "label_value": pa.array(cat(lambda t: t.value, np.int64)),
        "voxels": pa.array(cat(lambda t: t.voxels, np.int64)),
        "volume_mm3": pa.array(cat(lambda t: t.volume_mm3, np.float64)),
    }
    for n, name in enumerate(("i0", "i1", "j0", "j1", "k0", "k1")):
        cols[name] = pa.array(bounds[:, n].astype(np.int32))
    for n, name in enumerate(("centroid_i", "centroid_j", "centroid_k")):
        cols[name] = pa.array(cijk[:, n].astype(np.float64))
    for n, name in enumerate(("centroid_x", "centroid_y", "centroid_z")):
        cols[name] = pa.array(cxyz[:, n].astype(np.float64))
    cols["slices"] = pa.array(cat(lambda t: t.slices, np.int32))
    return pa.table(cols)


def parquet_available() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def write_instances(out, tables, class_names: list[str], parquet: bool | None = None
                    ) -> list[Path]:
    """Write OUT/instances.csv (and OUT/instances.parquet when pyarrow is installed, or when
    ``parquet`` is True - then a missing pyarrow is an error) atomically; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = list(tables)
    paths = [out / CSV_NAME]
    write_text_atomic(paths[0], instances_csv_text(tables, class_names))
    if parquet is None:
        parquet = parquet_available()
    if parquet:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise RuntimeError("instances.parquet needs pyarrow: pip install 'gpuconv[stats]'"
                               ) from None
        sink = pa.BufferOutputStream()
        pq.write_table(instances_arrow(tables, class_names), sink)
        paths.append(out / PARQUET_NAME)
        write_bytes_atomic(paths[1], sink.getvalue().to_pybytes())
    return paths


@dataclass
class CorpusInstances:
    """What ``scan_corpus`` found: one table per exam read, and the files that failed."""

    tables: list[InstanceTable]
    exams: list[str]                  # every exam read successfully (with or without instances)
    class_names: list[str]
    failures: list[dict] = field(default_factory=list)   # {"file", "reason"}
    seconds: float = 0.0
    backend: str = ""


def scan_corpus(inputs, *, backend="auto", connectivity3d: int = 26, classes=None,
                single_class: bool = False, split_csv=None, val_fraction: float = 0.2,
                seed: int = 0, workers: int | None = None, on_error=None) -> CorpusInstances:
    """Read every input and list its 3D instances (the ``stats`` command's data pass).

    Inputs, exam ids, class list and split follow ``convert`` exactly (same defaults), so an
    instances.csv from ``stats`` matches one written by ``convert --instances``.
    """
    from .backends import get_backend
    from .classes import build_class_map
    from .errors import InputError
    from .exams import check_unique_exam_ids, exam_id, read_split_csv, seeded_split
    from .nrrdio import read_header, read_volume
    from .pipeline import expand_inputs

    started = time.perf_counter()
    if connectivity3d not in (6, 18, 26):
        raise InputError("--connectivity3d must be 6, 18 or 26")
    be = get_backend(backend)
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError("no input files found")
    check_unique_exam_ids(paths)
    failures: list[dict] = []

    def fail(path, reason):
        failures.append({"file": str(path), "reason": reason})
        if on_error:
            on_error(str(path), reason)

    headers = {}
    for p in sorted(paths, key=exam_id):
        try:
            headers[p] = read_header(p)
        except InputError as exc:
            fail(p, exc.reason)
    class_map = build_class_map(list(headers.values()), classes, single_class)
    if split_csv is not None:
        table = read_split_csv(split_csv)
        split_of = {}
        for p in list(headers):
            e = exam_id(p)
            if e in table:
                split_of[e] = table[e]
            else:
                fail(p, f"exam '{e}' is missing from the split CSV {split_csv}")
                del headers[p]
    else:
        split_of = seeded_split([exam_id(p) for p in headers], val_fraction, seed)

    def work(p):
        vol = read_volume(p)
        e = exam_id(p)
        t = instances_for_volume(vol, e, split_of[e], class_map, be, connectivity3d)
        plain_max = int(t.value.max()) if (vol.header.segments is None and len(t)) else 0
        return t, plain_max

    tables, max_plain = [], 0
    todo = sorted(headers, key=exam_id)
    n_workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    with ThreadPoolExecutor(n_workers) as pool:
        futures = {pool.submit(work, p): p for p in todo}
        for fut in as_completed(futures):
            p = futures[fut]
            try:
                t, plain_max = fut.result()
            except InputError as exc:
                fail(p, exc.reason)
            except Exception as exc:  # one broken file must not stop the others
                fail(p, f"{type(exc).__name__}: {exc}")
            else:
                tables.append(t)
                max_plain = max(max_plain, plain_max)
    tables = _sorted(tables)
    failures.sort(key=lambda f: f["file"])
    return CorpusInstances(tables=tables, exams=[t.exam for t in tables],
                           class_names=class_map.final_names(max_plain), failures=failures,
                           seconds=time.perf_counter() - started, backend=be.name)
