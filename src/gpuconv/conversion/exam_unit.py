"""The per-exam unit of work: read -> hash -> skip? -> decode -> label -> results (-> write).

Every executor runs exactly this code: the thread pool runs its steps as overlapped stages
(:func:`read_step`, :func:`label_step`, :func:`write_step`), worker processes and Dask workers
run :func:`run_exam` for each exam of a batch, and the hybrid pool runs :func:`read_step` and
:func:`place_step` in worker processes, :func:`components_step` in its one labeller process and
:func:`results_step` and :func:`write_step` back in the worker (``label_step`` is those three
middle steps in one process).  Each yields one :class:`ExamOutcome` per exam,
and :func:`failure_reason` is the one place where anything that went wrong inside one exam's
work becomes that exam's one-line reason (the run goes on with the others).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpuconv.dataset.classes import ClassMap
from gpuconv.errors import InputError
from gpuconv.io.formats import decode_layers, read_data_blob, read_header  # NRRD, NIfTI, DICOM-SEG
from gpuconv.io.formats import kind_of, reread_input  # reread_input: NRRD and NIfTI headers
from gpuconv.io.nrrd_read import LabelVolume, VolumeHeader
from gpuconv.conversion.manifest import input_hash
from gpuconv.results.boxes import BoxTable, concat_box_tables, to_box_table


@dataclass(frozen=True)
class ExamJob:
    exam: str
    path: Path
    split: str
    # the header the run's pre-pass read: every executor's read step compares the file's header
    # now with it, so a file rewritten mid-run fails instead of converting with a stale plan
    header: VolumeHeader | None = field(default=None, compare=False, repr=False)


@dataclass
class LabelOptions:
    """What a worker needs to turn one file into results; picklable for processes and Dask."""

    class_map: ClassMap
    connectivity: int = 8
    backend: str = "auto"
    polygons: bool = False                                # also trace YOLO-seg polygons
    ref_sizes: dict = field(default_factory=dict)         # exam -> CT (I, J, K), see dataset.grid
    instances: bool = False                               # also 3D instances (instances.csv)
    connectivity3d: int = 26


@dataclass
class ExamResult:
    exam: str
    path: Path
    boxes: BoxTable
    max_plain_value: int = 0
    timings: dict = field(default_factory=dict)
    polygons: object = None              # results.polygons.PolygonTable with polygons
    header: VolumeHeader | None = None   # after placing a cropped grid on the image grid
    instances: object = None             # results.instances.InstanceTable with instances

    def stripped(self) -> "ExamResult":
        """What the parent of a worker needs once the files are written (small to pickle)."""
        self.polygons = self.instances = self.header = None
        return self


@dataclass
class ExamOutcome:
    """How one exam ended: 'ok' (``result``, ``files``), 'skipped' (unchanged since the run
    recorded in ``record``) or 'failed' (``reason``, one line)."""

    job: ExamJob
    status: str
    in_hash: str | None = None
    result: ExamResult | None = None
    files: list = field(default_factory=list)
    record: dict | None = None
    reason: str | None = None


@dataclass
class _Read:
    """The read step's value: the input hash, and the decoded layers unless skipped."""

    in_hash: str
    header: VolumeHeader | None = None
    layers: object = None
    skipped: bool = False
    timings: dict = field(default_factory=dict)


_BACKENDS: dict[str, object] = {}  # one backend per worker process (a GPU context is costly)


def worker_backend(name):
    """The backend of this worker process (a pool's or Dask's), made once per process; ``name``
    may also be a Backend object (the tests' slowed or simulated backends)."""
    from gpuconv.backends import backend_from
    if name not in _BACKENDS:
        _BACKENDS[name] = backend_from(name)
    return _BACKENDS[name]


def failure_reason(exc: BaseException, during: str = "") -> str:
    """The one line a failed exam reports (its file is named by the caller)."""
    if isinstance(exc, InputError):
        return exc.reason
    if isinstance(exc, OSError) and during == "write":
        return f"cannot write output ({exc})"
    return f"{type(exc).__name__}: {exc}"


def read_step(job: ExamJob, header: VolumeHeader | None, skip_hash: str | None) -> _Read:
    """Read the file once, hash it, stop if ``skip_hash`` (the manifest's) matches, decode."""
    t0 = time.perf_counter()
    header = header if header is not None else job.header
    if header.header_hash if header is not None else kind_of(job.path) == "nrrd":
        # NRRD: one read; the header re-parsed from the very bytes hashed, and one that changed
        # since the pre-pass (``header``) is this exam's error, not a stale conversion (issue 14)
        f = reread_input(job.path, header)
        hdr, blob, data_blob = f.header, f.blob, f.data_blob
    else:
        hdr = header if header is not None else read_header(job.path)
        blob = Path(job.path).read_bytes()
        data_blob = read_data_blob(hdr, blob)
    in_hash = input_hash(blob, data_blob if data_blob is not blob else None)
    if skip_hash is not None and skip_hash == in_hash:
        return _Read(in_hash, skipped=True)
    layers = decode_layers(hdr, data_blob)
    return _Read(in_hash, hdr, layers, timings={"read": time.perf_counter() - t0})


def place_step(job: ExamJob, read: _Read, opts: LabelOptions) -> tuple[VolumeHeader, object]:
    """The decoded layers placed on the image grid (a cropped Slicer grid padded back)."""
    from gpuconv.dataset.grid import place_on_grid
    placed = place_on_grid(LabelVolume(read.header, read.layers), opts.ref_sizes.get(job.exam))
    return placed.header, placed.layers


def components_step(layers, opts: LabelOptions, backend, timings: dict) -> tuple:
    """The backend's part, on one placed volume: per-slice components, and 3D instances when
    asked; both small NumPy tables (what the hybrid pool's labeller process sends back)."""
    t0 = time.perf_counter()
    comp = backend.slice_components(layers, opts.connectivity)
    timings["label"] = timings.get("label", 0.0) + time.perf_counter() - t0
    return comp, _instances_3d(layers, opts, backend, timings)


def _instances_3d(layers, opts: LabelOptions, backend, timings: dict):
    """3D components from the same decoded volume, when asked (else None)."""
    if not opts.instances:
        return None
    t0 = time.perf_counter()
    inst = backend.instances_3d(layers, opts.connectivity3d)
    timings["instances"] = timings.get("instances", 0.0) + time.perf_counter() - t0
    return inst


def _instance_rows(job: ExamJob, hdr: VolumeHeader, inst, opts: LabelOptions, timings: dict):
    """The 3D components as instance rows on the host (None when there are none)."""
    if inst is None:
        return None
    from gpuconv.results.instances import instance_rows
    t0 = time.perf_counter()
    rows = instance_rows(job.exam, "", inst, hdr, opts.class_map)
    timings["instances"] = timings.get("instances", 0.0) + time.perf_counter() - t0
    return rows


def results_step(job: ExamJob, hdr: VolumeHeader, layers, comp, inst, opts: LabelOptions,
                 timings: dict) -> ExamResult:
    """Components -> boxes (and polygons, 3D instance rows) on the host, for every backend."""
    t1 = time.perf_counter()
    boxes = to_box_table(comp, hdr, opts.class_map)
    timings["boxes"] = time.perf_counter() - t1
    polygons = None
    if opts.polygons:  # traced on the host for every backend: byte-identical files
        from gpuconv.results.polygons import to_polygon_table
        t2 = time.perf_counter()
        polygons = to_polygon_table(layers, hdr, opts.class_map, opts.connectivity, where=comp)
        timings["polygons"] = time.perf_counter() - t2
    instances = _instance_rows(job, hdr, inst, opts, timings)
    max_plain = int(comp.value.max()) if (hdr.segments is None and len(comp)) else 0
    return ExamResult(job.exam, hdr.path, boxes, max_plain, timings, polygons, hdr, instances)


def label_step(job: ExamJob, read: _Read, opts: LabelOptions, backend) -> ExamResult:
    """Components on the backend, then boxes (and polygons, 3D instances) on the host.

    With the CPU backend and no polygons, slices are labelled a chunk at a time
    (:func:`chunked_results`); the result is the same either way.  ``read.layers`` is dropped:
    the volume is freed when labelling ends, not when the exam has been written."""
    if _chunkable(backend, opts):
        return chunked_results(job, read, opts, backend)
    timings = read.timings
    t0 = time.perf_counter()
    hdr, layers = place_step(job, read, opts)
    read.layers = None
    timings["label"] = time.perf_counter() - t0
    comp, inst = components_step(layers, opts, backend, timings)
    return results_step(job, hdr, layers, comp, inst, opts, timings)


# Chunks of slices (issue 15, dense-map memory): a 512x512x128 map at 40 % foreground has
# 1.2 M boxes, whose components, class and sort temporaries took ~110 B a box when the whole
# file was labelled at once (two such files in flight: 330 MB).  Labelled a chunk of slices at
# a time, the temporaries are a chunk's, and the file keeps only its compact box table.
_CHUNK_BOXES = 1 << 17          # aim: boxes per chunk (sets the chunk's temporaries)
_CHUNK_MAX_VOXELS = 1 << 24     # at most this many voxels a chunk (64 slices of 512x512; at
_CHUNK_FIRST_VOXELS = 1 << 20   # least 2^23, so a lone big file is still split over cores)


def _chunkable(backend, opts: LabelOptions) -> bool:
    """The CPU backend's own ``slice_components`` (slices are independent and a call costs
    nothing to set up); polygons trace from the whole file's components."""
    from gpuconv.backends.cpu import CpuBackend
    return (not opts.polygons and isinstance(backend, CpuBackend)
            and type(backend).slice_components is CpuBackend.slice_components)


def chunked_results(job: ExamJob, read: _Read, opts: LabelOptions, backend) -> ExamResult:
    """``label_step``'s result, labelling a chunk of slices at a time: each chunk's components
    become its canonical box table at once (rows sort by slice first, so the chunks' tables
    joined in slice order are the whole file's table).  The volume (``read.layers``, dropped
    from ``read``) is freed once the boxes (and 3D instances) are made.

    What a file's checks reject is decided on the whole file: a plain map's values are
    checked once, over all chunks; and when any chunk fails, the file is labelled again whole,
    so that it fails with exactly the error (and the same first one) as the one-call path."""
    timings = read.timings
    t0 = time.perf_counter()
    hdr, layers = place_step(job, read, opts)
    read.layers = None
    timings["label"] = time.perf_counter() - t0
    class_map = opts.class_map
    _, W, H, K = hdr.shape
    per_slice = max(1, W * H)
    max_n = max(1, _CHUNK_MAX_VOXELS // per_slice)
    n = max(1, min(max_n, _CHUNK_FIRST_VOXELS // per_slice))
    parts: list[BoxTable] = []
    seen: dict = {}            # plain maps: layer -> distinct values (checked at the end)
    max_plain = 0
    boxes = 0
    t_label = t_boxes = 0.0
    k0 = 0
    try:
        while k0 < K:
            k1 = min(K, k0 + n)
            t0 = time.perf_counter()
            comp = backend.slice_components(layers[..., k0:k1], opts.connectivity)
            t1 = time.perf_counter()
            t_label += t1 - t0
            if len(comp):
                comp.k = comp.k + np.int32(k0)   # chunk slice -> file slice
                if hdr.segments is None:
                    max_plain = max(max_plain, int(comp.value.max()))
                parts.append(to_box_table(comp, hdr, class_map, seen))
                boxes += len(comp)
            del comp
            t_boxes += time.perf_counter() - t1
            # the next chunk from the boxes per slice so far: ~_CHUNK_BOXES boxes
            per = boxes / k1
            n = max_n if per <= 0 else int(max(1, min(max_n, _CHUNK_BOXES / per)))
            k0 = k1
        if hdr.segments is None:
            for lay in sorted(seen):
                class_map.check_plain_values(np.array(sorted(seen[lay])), hdr.path)
    except Exception:  # noqa: BLE001 - the file fails as labelled whole (its exact error)
        parts = []
        comp, inst = components_step(layers, opts, backend, timings)
        return results_step(job, hdr, layers, comp, inst, opts, timings)
    timings["label"] = timings.get("label", 0.0) + t_label
    inst = _instances_3d(layers, opts, backend, timings)
    del layers   # the caller holds no other reference: the volume is freed here
    t3 = time.perf_counter()
    table = concat_box_tables(parts, W, H, K)
    del parts
    timings["boxes"] = t_boxes + time.perf_counter() - t3
    instances = _instance_rows(job, hdr, inst, opts, timings)
    return ExamResult(job.exam, hdr.path, table, max_plain, timings, None, hdr, instances)


def write_step(job: ExamJob, res: ExamResult, writer) -> list[str]:
    t0 = time.perf_counter()
    files = writer.write(res, job.split)
    res.timings["write"] = time.perf_counter() - t0
    return files


def run_exam(job: ExamJob, opts: LabelOptions, backend, *, header: VolumeHeader | None = None,
             skip_hash: str | None = None, writer=None) -> ExamOutcome:
    """The whole unit for one exam; never raises for a problem of this exam's own."""
    in_hash = None
    during = "read"
    try:
        read = read_step(job, header, skip_hash)
        in_hash = read.in_hash
        if read.skipped:
            return ExamOutcome(job, "skipped", in_hash)
        during = "label"
        res = label_step(job, read, opts, backend)
        files: list[str] = []
        if writer is not None:
            during = "write"
            files = write_step(job, res, writer)
        return ExamOutcome(job, "ok", in_hash, res, files)
    except Exception as exc:  # noqa: BLE001 - the per-exam boundary: this exam fails alone
        return ExamOutcome(job, "failed", in_hash, reason=failure_reason(exc, during))
