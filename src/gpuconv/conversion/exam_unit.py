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

from gpuconv.dataset.classes import ClassMap
from gpuconv.errors import InputError
from gpuconv.io.formats import decode_layers, read_data_blob, read_header  # NRRD, NIfTI, DICOM-SEG
from gpuconv.io.formats import kind_of, reread_input  # reread_input: NRRD and NIfTI headers
from gpuconv.io.nrrd_read import LabelVolume, VolumeHeader
from gpuconv.conversion.manifest import input_hash
from gpuconv.results.boxes import BoxTable, to_box_table


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
    inst = None
    if opts.instances:  # 3D components from the same decoded volume
        t1 = time.perf_counter()
        inst = backend.instances_3d(layers, opts.connectivity3d)
        timings["instances"] = timings.get("instances", 0.0) + time.perf_counter() - t1
    return comp, inst


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
    instances = None
    if inst is not None:
        from gpuconv.results.instances import instance_rows
        t3 = time.perf_counter()
        instances = instance_rows(job.exam, "", inst, hdr, opts.class_map)
        timings["instances"] = timings.get("instances", 0.0) + time.perf_counter() - t3
    max_plain = int(comp.value.max()) if (hdr.segments is None and len(comp)) else 0
    return ExamResult(job.exam, hdr.path, boxes, max_plain, timings, polygons, hdr, instances)


def label_step(job: ExamJob, read: _Read, opts: LabelOptions, backend) -> ExamResult:
    """Components on the backend, then boxes (and polygons, 3D instances) on the host."""
    timings = read.timings
    t0 = time.perf_counter()
    hdr, layers = place_step(job, read, opts)
    timings["label"] = time.perf_counter() - t0
    comp, inst = components_step(layers, opts, backend, timings)
    return results_step(job, hdr, layers, comp, inst, opts, timings)


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
