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

from gpuconv.backends.base import Instances3D
from gpuconv.results.boxes import class_ids
from gpuconv.dataset.classes import ClassMap
from gpuconv.io.nrrd_read import VolumeHeader
from gpuconv.writers.atomic import write_bytes_atomic, write_text_atomic

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


def exam_instances(hdr: VolumeHeader, layers: np.ndarray, exam: str, split: str,
                   class_map: ClassMap, backend, connectivity3d: int = 26) -> InstanceTable:
    """Label one decoded volume in 3D on ``backend`` and build its table (the pipeline hook:
    call it beside ``slice_components`` on the same ``layers``)."""
    inst = backend.instances_3d(layers, connectivity3d)
    return instance_rows(exam, split, inst, hdr, class_map)


def _class_name(names: list[str], cid: int) -> str:
    """As the YOLO table does: a plain map's value v beyond the list is named str(v)."""
    return names[cid] if 0 <= cid < len(names) else str(cid + 1)


def _sorted(tables) -> list[InstanceTable]:
    return sorted(tables, key=lambda t: t.exam)


def instances_csv_rows(t: InstanceTable, class_names: list[str], split: str | None = None
                       ) -> str:
    """One exam's CSV rows (no header line); ``split`` overrides the table's own."""
    if not len(t):
        return ""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    f = FLOAT_FORMAT.format
    split = t.split if split is None else split
    for r, (cid, layer, value, vox, vol, b, cijk, cxyz, sl) in enumerate(zip(
            t.cls.tolist(), t.layer.tolist(), t.value.tolist(), t.voxels.tolist(),
            t.volume_mm3.tolist(), t.bounds.tolist(), t.centroid_ijk.tolist(),
            t.centroid_xyz.tolist(), t.slices.tolist())):
        w.writerow([t.exam, split, cid, _class_name(class_names, cid), r + 1, layer, value, vox,
                    f(vol), *b, *(f(x) for x in cijk), *(f(x) for x in cxyz), sl])
    return buf.getvalue()


def _header() -> str:
    return ",".join(COLUMNS) + "\n"


def instances_csv_text(tables, class_names: list[str]) -> str:
    """instances.csv content: header + one row per instance, sorted by exam, class, id."""
    return _header() + "".join(instances_csv_rows(t, class_names) for t in _sorted(tables))


_INT32 = ("class_id", "instance_id", "layer", "i0", "i1", "j0", "j1", "k0", "k1", "slices")
_INT64 = ("label_value", "voxels")
_STRING = ("exam", "split", "class_name")


def parquet_bytes(csv_text: str) -> bytes:
    """instances.parquet from the CSV text, with explicit column types (so exam '0042' stays
    a string and the numbers are exactly those of the CSV)."""
    from gpuconv.writers.table import typed_parquet
    types = {c: "string" for c in _STRING}
    types.update({c: "int32" for c in _INT32})
    types.update({c: "int64" for c in _INT64})
    types.update({c: "float64" for c in COLUMNS if c not in types})
    return typed_parquet(csv_text, types)


def _write_files(out: Path, text: str, parquet: bool | None) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / CSV_NAME]
    write_text_atomic(paths[0], text)
    from gpuconv.writers.table import parquet_available
    if parquet is None:
        parquet = parquet_available()
    if parquet:
        if not parquet_available():
            raise RuntimeError("instances.parquet needs pyarrow: pip install 'gpuconv[stats]'")
        paths.append(out / PARQUET_NAME)
        write_bytes_atomic(paths[1], parquet_bytes(text))
    return paths


def write_instances(out, tables, class_names: list[str], parquet: bool | None = None
                    ) -> list[Path]:
    """Write OUT/instances.csv (and OUT/instances.parquet when pyarrow is installed, or when
    ``parquet`` is True - then a missing pyarrow is an error) atomically; returns the paths."""
    return _write_files(Path(out), instances_csv_text(list(tables), class_names), parquet)


# --- resumable runs (convert --instances): one part per exam, merged at the end -----------

PART_KIND = "instances"


def write_instances_part(out, table: InstanceTable, class_names: list[str],
                         split: str | None = None) -> Path:
    """OUT/.parts/instances/{exam}.csv: this exam's rows, so a resumed run keeps them."""
    from gpuconv.writers.table import part_path
    p = part_path(Path(out), PART_KIND, table.exam)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(p, instances_csv_rows(table, class_names, split))
    return p


def merge_instances_parts(out, exams, parquet: bool | None = None) -> list[Path]:
    """OUT/instances.csv (+ .parquet) from the parts of ``exams`` (sorted by exam id; exams
    without a part - failed ones - are left out)."""
    from gpuconv.writers.table import part_texts
    out = Path(out)
    return _write_files(out, _header() + part_texts(out, PART_KIND, sorted(exams)), parquet)


@dataclass
class InstanceScan:
    """What ``scan_instances`` found: one table per exam read, and the files that failed."""

    tables: list[InstanceTable]
    exams: list[str]                  # every exam read successfully (with or without instances)
    class_names: list[str]
    failures: list[dict] = field(default_factory=list)   # {"file", "reason"}
    seconds: float = 0.0
    backend: str = ""


def scan_instances(inputs, *, backend="auto", connectivity3d: int = 26, classes=None,
                   single_class: bool = False, split_csv=None, val_fraction: float = 0.2,
                   seed: int = 0, workers: int | None = None, on_error=None) -> InstanceScan:
    """Read every input and list its 3D instances (the ``stats`` command's data pass).

    Inputs, exam ids, class list and split follow ``convert`` exactly (same defaults), so an
    instances.csv from ``stats`` matches one written by ``convert --instances``.
    """
    from gpuconv.backends import backend_from
    from gpuconv.dataset.plan import expand_inputs, plan_run
    from gpuconv.dataset.exams import exam_id
    from gpuconv.errors import InputError, OptionError
    from gpuconv.io.formats import read_volume  # NRRD, NIfTI, DICOM-SEG

    started = time.perf_counter()
    if connectivity3d not in (6, 18, 26):
        raise OptionError("connectivity3d", "must be 6, 18 or 26")
    be = backend_from(backend)
    plan = plan_run(expand_inputs(inputs), classes=classes, single_class=single_class,
                    split_csv=split_csv, val_fraction=val_fraction, seed=seed,
                    on_error=on_error)
    headers, class_map, split_of = plan.headers, plan.class_map, plan.split_of
    failures, fail = plan.failures, plan.fail

    def work(p):
        vol = read_volume(p)
        e = exam_id(p)
        t = exam_instances(vol.header, vol.layers, e, split_of[e], class_map, be,
                           connectivity3d)
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
    return InstanceScan(tables=tables, exams=[t.exam for t in tables],
                        class_names=class_map.final_names(max_plain), failures=failures,
                        seconds=time.perf_counter() - started, backend=be.name)
