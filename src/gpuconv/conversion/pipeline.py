"""``convert``: the end-to-end job.

plan (inputs, header pre-pass, classes, split) -> per exam: read -> label -> write, overlapped
on local processes (``processes.py``), on threads with bounded queues (``stages.py``) or on a Dask
cluster (``distributed.py``) ->
dataset.yaml, tables and summary.json.

Per-file work is isolated: a bad file is recorded with a one-line reason and the others still
convert.  Problems that would make the whole output wrong (duplicate exam ids, an unreadable
split or classes file) stop the run before anything is written.  Finished exams are recorded in
OUT/manifest.jsonl, so an interrupted run resumes where it stopped (``force=True`` redoes all).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpuconv import __version__
from gpuconv.backends import get_backend, gpu_unavailable_reason
from gpuconv.results.boxes import BoxTable, to_box_table
from gpuconv.dataset.classes import ClassMap
from gpuconv.dataset.plan import expand_inputs, plan_corpus  # noqa: F401 - expand_inputs is API
from gpuconv.errors import InputError
from gpuconv.dataset.exams import exam_id
from gpuconv.conversion.manifest import Manifest, input_hash, options_hash
from gpuconv.io.nrrd_read import LabelVolume, VolumeHeader, decode_layers, read_data_blob, read_header
from gpuconv.results.polygons import PolygonTable, polygon_lines_by_slice, to_polygon_table
from gpuconv.conversion.stages import Stage, run_stages
from gpuconv.conversion.malloc_tuning import reuse_freed_memory
from gpuconv.writers.atomic import remove_stale_temps, write_text_atomic
from gpuconv.writers.table import BOX_TABLE_PARTS, merge_parts, write_part
from gpuconv.writers.yolo import LabelDirs, write_dataset_yaml

FORMATS = ("boxes", "polygons", "table")


def parse_formats(fmt) -> tuple[str, ...]:
    """'boxes' (default), 'polygons' (YOLO-seg), 'table', or a label format and the table
    joined by a comma ('boxes,table').  Boxes and polygons never go together: Ultralytics reads a
    whole label file as polygons when any line has more than 6 fields."""
    items = [f.strip().lower() for f in (fmt.split(",") if isinstance(fmt, str) else fmt)]
    bad = [f for f in items if f not in FORMATS]
    if bad or not items:
        raise InputError(f"unknown --format '{','.join(bad)}' (choose from {', '.join(FORMATS)})")
    if "boxes" in items and "polygons" in items:
        raise InputError("--format: boxes and polygons cannot go together (a label file holds "
                         "one or the other)")
    return tuple(sorted(set(items), key=FORMATS.index))


@dataclass
class LabelOptions:
    """What a worker needs to turn one file into boxes; picklable for Dask workers."""

    class_map: ClassMap
    connectivity: int = 8
    backend: str = "auto"
    polygons: bool = False                                # also trace YOLO-seg polygons
    ref_sizes: dict = field(default_factory=dict)         # exam -> CT (I, J, K), see ct_match
    instances: bool = False                               # also 3D instances (instances.csv)
    connectivity3d: int = 26


@dataclass
class ExamResult:
    exam: str
    path: Path
    boxes: BoxTable
    max_plain_value: int = 0
    timings: dict = field(default_factory=dict)
    polygons: PolygonTable | None = None
    header: VolumeHeader | None = None   # after placing a cropped grid on the image grid
    instances: object = None             # instances.InstanceTable with --instances


def label_volume(hdr: VolumeHeader, layers, opts: LabelOptions, backend, exam: str,
                 timings: dict) -> ExamResult:
    from gpuconv.dataset.grid import place_on_grid
    t0 = time.perf_counter()
    placed = place_on_grid(LabelVolume(hdr, layers), opts.ref_sizes.get(exam))  # cropped grids
    hdr, layers = placed.header, placed.layers
    comp = backend.slice_components(layers, opts.connectivity)
    t1 = time.perf_counter()
    boxes = to_box_table(comp, hdr, opts.class_map)
    timings["label"] = t1 - t0
    timings["boxes"] = time.perf_counter() - t1
    polygons = None
    if opts.polygons:  # traced on the host for every backend: byte-identical files
        t2 = time.perf_counter()
        polygons = to_polygon_table(layers, hdr, opts.class_map, opts.connectivity, where=comp)
        timings["polygons"] = time.perf_counter() - t2
    instances = None
    if opts.instances:  # 3D components from the same decoded volume
        from gpuconv.results.instances import exam_instances
        t3 = time.perf_counter()
        instances = exam_instances(hdr, layers, exam, "", opts.class_map, backend,
                                   opts.connectivity3d)
        timings["instances"] = time.perf_counter() - t3
    max_plain = int(comp.value.max()) if (hdr.segments is None and len(comp)) else 0
    return ExamResult(exam, hdr.path, boxes, max_plain, timings, polygons, hdr, instances)


def label_exam(path, opts: LabelOptions, backend=None) -> ExamResult:
    """Read, decode and reduce one file to its canonical box table (no files written)."""
    backend = backend or get_backend(opts.backend)
    t0 = time.perf_counter()
    hdr = read_header(path)
    layers = decode_layers(hdr, read_data_blob(hdr))
    return label_volume(hdr, layers, opts, backend, exam_id(path),
                        {"read": time.perf_counter() - t0})


class ExamWriter:
    """Writes one exam's outputs under OUT and says which files it wrote (for the manifest)."""

    def __init__(self, out: Path, names: list[str], formats: tuple[str, ...], write_empty: bool,
                 images=None):
        self.out = Path(out)
        self.names = names
        self.formats = formats
        self.write_empty = write_empty
        self.dirs = LabelDirs(out) if ("boxes" in formats or "polygons" in formats) else None
        self.images = images  # (exam -> CT path, ImageOptions) with --images, else None
        self.image_dirs = None
        if images is not None:
            from gpuconv.writers.images import ImageDirs
            self.image_dirs = ImageDirs(out)

    def write(self, res: ExamResult, split: str) -> list[str]:
        files: list[Path] = []
        if self.image_dirs is not None:  # first: a CT/label grid mismatch writes nothing
            from gpuconv.images.ct_slices import write_exam_images
            ct_of, image_opts = self.images
            files += write_exam_images(self.image_dirs, res.exam, split, ct_of[res.exam],
                                       res.header, set(res.boxes.k.tolist()), image_opts)
        if self.dirs is not None and res.polygons is not None:
            files += self.dirs.write_texts(res.exam, split,
                                           polygon_lines_by_slice(res.polygons),
                                           res.boxes.slices, self.write_empty)
        elif self.dirs is not None:
            files += self.dirs.write_exam(res.exam, split, res.boxes, self.write_empty)
        if "table" in self.formats:
            files.append(write_part(self.out, "boxes", res.exam, split, res.boxes, self.names))
        if res.instances is not None:
            from gpuconv.results.instances import write_instances_part
            files.append(write_instances_part(self.out, res.instances, self.names, split))
        return [p.relative_to(self.out).as_posix() for p in files]


def _progress(total: int, enabled: bool | None):
    """A rich progress bar (files, rate, ETA) on a terminal; nothing otherwise."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled or total == 0:
        return None
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)
    prog = Progress(TextColumn("converting"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                    TimeRemainingColumn(), console=Console(stderr=True), transient=True)
    prog.add_task("files", total=total, rate="")
    return prog


def convert(inputs, out, *, split_csv=None, val_fraction: float = 0.2, seed: int = 0,
            connectivity: int = 8, classes=None, single_class: bool = False,
            write_empty: bool = False, backend="auto", workers: int | None = None,
            queue: int | None = None, fmt="boxes", force: bool = False,
            scheduler: str | None = None, scheduler_file=None, batch_size: int = 4,
            images=None, window: str | None = None, channels3: bool = False,
            background_fraction: float | None = None, compat: str | None = None,
            instances: bool = False, connectivity3d: int = 26,
            pool: str = "auto", progress: bool | None = None, on_error=None) -> dict:
    """Convert label volumes to an Ultralytics dataset in ``out``; returns the summary dict.

    ``workers``: threads or processes for reading/decoding, labelling and writing (default: all
    cores); ``pool``: 'process' (each worker a process; no shared GIL, see processes.py),
    'thread' (one process, staged threads; ``queue`` decoded volumes may wait between stages,
    default 2 x workers) or 'auto' (processes for the CPU backend with >= 4 workers and at
    least ``PROCESS_MIN_FILES_PER_WORKER`` files per worker, where their start-up pays off).
    ``scheduler``/``scheduler_file``: run labelling on an existing Dask cluster instead.
    ``images``: CT inputs written as PNG slices (see docs/datasets.md) with HU ``window`` (a
    preset or 'C,W'; three joined by '+' or ``channels3`` for RGB), every slice or, with
    ``background_fraction``, the labelled ones plus that share of the others.
    ``compat='coca'``: the published COCA script's labels, byte for byte (``compat_coca.py``).
    ``on_error(path, reason)`` is called for each failed file (the CLI prints it as one line).
    Raises InputError for problems that stop the whole run before anything is written.
    """
    started = time.perf_counter()
    reuse_freed_memory()  # 5x faster decoding of volumes > 32 MiB (see tuning.py)
    if connectivity not in (4, 8):
        raise InputError("--connectivity must be 4 or 8")
    if connectivity3d not in (6, 18, 26):
        raise InputError("--connectivity3d must be 6, 18 or 26")
    choose_pool(pool, 1, 0)  # an unknown --pool stops the run before anything is written
    formats = parse_formats(fmt)
    distributed = scheduler is not None or scheduler_file is not None
    be = None if distributed else get_backend(backend)
    out = Path(out)
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError("no input files found")
    if compat is not None:
        if compat != "coca":
            raise InputError(f"unknown --compat '{compat}' (choose from coca)")
        if images or formats != ("boxes",):
            raise InputError("--compat coca writes the published script's box labels only; it "
                             "cannot be combined with --images or another --format")
        from gpuconv.writers.compat_coca import convert_coca
        return convert_coca(paths, out, split_csv=split_csv, val_fraction=val_fraction,
                            seed=seed, on_error=on_error)
    if not images and (window is not None or channels3 or background_fraction is not None):
        raise InputError("--window, --channels3 and --background-fraction need --images")
    plan = plan_corpus(paths, classes=classes, single_class=single_class, split_csv=split_csv,
                       val_fraction=val_fraction, seed=seed, on_error=on_error)
    headers, class_map, split_of = plan.headers, plan.class_map, plan.split_of
    failures, fail = plan.failures, plan.fail
    image_job, ref_sizes, ct_stamp = _plan_images(images, window, channels3,
                                                  background_fraction, seed, headers, be,
                                                  workers, fail)

    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(out)
    manifest = Manifest(out, reset=force)
    common = {"gpuconv": __version__, "connectivity": connectivity, "classes": class_map.names,
              "single_class": single_class, "value_named": class_map.value_named,
              "write_empty": write_empty, "formats": formats,
              "instances": connectivity3d if instances else None}
    if image_job is not None:
        common["images"] = {"windows": [str(w) for w in image_job[1].windows],
                            "background_fraction": background_fraction, "seed": seed}
    jobs = [(exam_id(p), p, split_of[exam_id(p)]) for p in sorted(headers, key=exam_id)]
    opt_hash = {e: options_hash({**common, "split": s, **ct_stamp.get(e, {})})
                for e, _, s in jobs}
    writer = ExamWriter(out, class_map.names, formats, write_empty, image_job)
    opts = LabelOptions(class_map, connectivity, backend, "polygons" in formats, ref_sizes,
                        instances, connectivity3d)

    records: dict[str, dict] = {}
    stage_seconds = {"read": 0.0, "label": 0.0, "boxes": 0.0, "write": 0.0}
    n_workers = max(1, workers or os.cpu_count() or 1)
    depth = queue or 2 * n_workers
    pool_used = "dask" if distributed else choose_pool(pool, n_workers, len(jobs), be.name)
    split_by_path = {p: s for _, p, s in jobs}

    def finish(exam: str, path: Path, split: str, res: ExamResult | None, skipped: dict | None,
               files: list[str], in_hash: str):
        if skipped is not None:
            records[exam] = {**skipped, "skipped": True}
            return
        b = res.boxes
        per_class: dict[int, int] = {}
        for c in b.cls.tolist():
            per_class[c] = per_class.get(c, 0) + 1
        rec = {"exam": exam, "file": str(path), "split": split, "status": "ok",
               "input_hash": in_hash, "options_hash": opt_hash[exam], "files": files,
               "slices": b.slices, "slices_with_boxes": len(set(b.k.tolist())),
               "boxes": len(b), "boxes_per_class": {str(c): n for c, n in
                                                   sorted(per_class.items())},
               "max_plain_value": res.max_plain_value}
        manifest.record(rec)
        records[exam] = rec
        for k, v in res.timings.items():
            stage_seconds[k] = stage_seconds.get(k, 0.0) + v

    def failed(exam: str, path: Path, reason: str, in_hash: str | None):
        fail(path, reason)
        manifest.record({"exam": exam, "file": str(path), "status": "failed",
                         "reason": reason, "input_hash": in_hash})

    prog = _progress(len(jobs), progress)
    if prog:
        prog.start()
    done = 0

    def tick():
        nonlocal done
        done += 1
        if prog:
            rate = done / max(time.perf_counter() - started, 1e-9)
            prog.update(0, advance=1, rate=f"{rate:.1f} files/s")

    try:
        if distributed:
            from gpuconv.conversion.dask_executor import run_on_dask
            for exam, path, split, in_hash, skipped, res, error in run_on_dask(
                    jobs, opts, manifest, opt_hash, out, scheduler=scheduler,
                    scheduler_file=scheduler_file, batch_size=batch_size):
                if error is not None:
                    failed(exam, path, error, in_hash)
                elif skipped is not None:
                    finish(exam, path, split, None, skipped, [], in_hash)
                else:
                    t0 = time.perf_counter()
                    try:
                        files = writer.write(res, split)
                    except InputError as exc:  # e.g. a CT/label grid mismatch
                        failed(exam, path, exc.reason, in_hash)
                    except OSError as exc:
                        failed(exam, path, f"cannot write output ({exc})", in_hash)
                    else:
                        res.timings["write"] = time.perf_counter() - t0
                        finish(exam, path, split, res, None, files, in_hash)
                tick()
        elif pool_used == "process":
            from gpuconv.conversion.process_pool import run_on_processes
            for exam, path, split, in_hash, skipped, res, files, error in run_on_processes(
                    jobs, opts, writer, manifest, opt_hash, out, n_workers):
                if error is not None:
                    failed(exam, path, error, in_hash)
                elif skipped is not None:
                    finish(exam, path, split, None, skipped, [], in_hash)
                else:
                    finish(exam, path, split, res, None, files, in_hash)
                tick()
        else:
            _run_local(jobs, headers, opts, be, writer, manifest, opt_hash, out, n_workers,
                       depth, finish, failed, tick, split_by_path)
    finally:
        if prog:
            prog.stop()

    # --- whole-run outputs ---------------------------------------------------------------
    ok = [records[e] for e, _, _ in jobs if e in records]
    max_plain = max([r.get("max_plain_value", 0) for r in ok] or [0])
    names = class_map.final_names(max_plain)
    yaml_path = write_dataset_yaml(out, names)
    if "table" in formats:
        merge_parts(out, "boxes", [r["exam"] for r in ok], BOX_TABLE_PARTS)
    if instances:
        from gpuconv.results.instances import merge_instances_parts
        merge_instances_parts(out, [r["exam"] for r in ok])
    per_class = [0] * len(names)
    for r in ok:
        for c, n in r["boxes_per_class"].items():
            per_class[int(c)] += n
    splits = {"train": 0, "val": 0}
    for r in ok:
        splits[r["split"]] += 1
    failures.sort(key=lambda f: f["file"])
    seconds = time.perf_counter() - started
    busy = sum(stage_seconds.values()) or 1.0
    summary = {
        "gpuconv": __version__,
        "backend": "dask" if distributed else be.name,
        "backend_requested": str(backend),
        "gpu_unavailable": (gpu_unavailable_reason() if str(backend) == "auto"
                            and not distributed and be.name != "gpu" else None),
        "out": str(out.resolve()),
        "dataset_yaml": str(yaml_path.resolve()),
        "connectivity": connectivity,
        "formats": list(formats),
        "classes": names,
        "files": len(ok),
        "skipped_unchanged": sum(1 for r in ok if r.get("skipped")),
        "slices": sum(r["slices"] for r in ok),
        "slices_with_boxes": sum(r["slices_with_boxes"] for r in ok),
        "label_files": sum(1 for r in ok for f in r["files"] if f.startswith("labels/")),
        "images": sum(1 for r in ok for f in r["files"] if f.startswith("images/")),
        "boxes": sum(r["boxes"] for r in ok),
        "exams_per_split": splits,
        "boxes_per_class": {n: per_class[i] for i, n in enumerate(names)},
        "failed": len(failures),
        "failures": failures,
        "workers": n_workers,
        "pool": pool_used,
        "seconds": round(seconds, 4),
        "files_per_second": round(len(ok) / seconds, 2) if seconds > 0 else None,
        "stage_seconds": {k: round(v, 4) for k, v in stage_seconds.items()},
        "stage_share": {k: round(v / busy, 3) for k, v in stage_seconds.items()},
    }
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


PROCESS_MIN_FILES_PER_WORKER = 8   # below this, starting the processes costs more than it wins


def choose_pool(pool: str, n_workers: int, n_files: int, backend: str = "cpu") -> str:
    """'process' or 'thread' for ``pool`` = auto | process | thread (see ``convert``).

    auto picks processes only for the CPU backend: on the H100 machine (16 cores) worker
    processes converted 97 scans/s against 77-81 with threads, but with the GPU backend 39-48
    against 55 (each process needs its own CUDA context, and the contexts take turns on the
    GPU); see benchmarks/results/h100-16core/RUN.md."""
    if pool not in ("auto", "process", "thread"):
        raise InputError(f"unknown --pool '{pool}' (choose from auto, process, thread)")
    if pool != "auto":
        return pool
    enough = n_files >= PROCESS_MIN_FILES_PER_WORKER * n_workers
    return "process" if backend == "cpu" and n_workers >= 4 and enough else "thread"


def _plan_images(images, window, channels3, background_fraction, seed, headers, be, workers,
                 fail):
    """``--images``: match each label file to its CT (a file without one fails), read the CT
    sizes (the reference for cropped label grids) and the image options.  Returns
    (image job or None, exam -> CT sizes, exam -> manifest stamp of the CT file)."""
    if not images:
        return None, {}, {}
    from gpuconv.dataset.grid import match_ct, read_ct_header
    from gpuconv.images.ct_slices import ImageOptions
    from gpuconv.images.windowing import parse_windows
    windows = parse_windows(window, channels3)
    if background_fraction is not None and not 0.0 <= background_fraction <= 1.0:
        raise InputError("--background-fraction must be between 0 and 1")
    ct_of = match_ct(images if isinstance(images, (list, tuple)) else [images], list(headers))
    ref_sizes, stamps = {}, {}
    for p in list(headers):
        e = exam_id(p)
        if e not in ct_of:
            fail(p, f"no CT volume with exam id '{e}' among --images")
            del headers[p]
            continue
        try:
            ref_sizes[e] = read_ct_header(ct_of[e]).sizes
        except InputError as exc:
            fail(p, f"CT {ct_of[e]}: {exc.reason}")
            del headers[p]
            continue
        st = ct_of[e].stat()
        stamps[e] = {"ct": [str(ct_of[e].resolve()), st.st_size, st.st_mtime_ns]}
    use_gpu = be is not None and getattr(be, "name", "") == "gpu"
    n = max(1, (workers or os.cpu_count() or 1) // 2)
    return (ct_of, ImageOptions(windows, background_fraction, seed, use_gpu, n)), ref_sizes, stamps


def _run_local(jobs, headers, opts, backend, writer, manifest, opt_hash, out, n_workers, depth,
               finish, failed, tick, split_by_path):
    """read (threads) -> label (threads; one for the GPU) -> write (threads), bounded queues."""

    def read(job, _):
        exam, path, split = job
        t0 = time.perf_counter()
        hdr = headers[path]
        blob = path.read_bytes()
        data_blob = read_data_blob(hdr, blob)
        in_hash = input_hash(blob, data_blob if data_blob is not blob else None)
        rec = manifest.is_done(exam, in_hash, opt_hash[exam], out)
        if rec is not None:
            return in_hash, rec, None, None
        layers = decode_layers(hdr, data_blob)
        return in_hash, None, layers, {"read": time.perf_counter() - t0}

    def label(job, value):
        in_hash, skipped, layers, timings = value
        if skipped is not None:
            return in_hash, skipped, None
        exam, path, _ = job
        return in_hash, None, label_volume(headers[path], layers, opts, backend, exam, timings)

    def write(job, value):
        in_hash, skipped, res = value
        if skipped is not None:
            return in_hash, skipped, None, []
        t0 = time.perf_counter()
        files = writer.write(res, job[2])
        res.timings["write"] = time.perf_counter() - t0
        return in_hash, None, res, files

    label_threads = n_workers if getattr(backend, "name", "cpu") == "cpu" else 1
    # as many writers as workers: writing small files waits on the disk with the GIL released
    # (2 writers instead of 1 cut a 2-worker run on the build VM's disk by ~12%)
    stages = [Stage("read", read, n_workers), Stage("label", label, label_threads),
              Stage("write", write, n_workers)]
    for outcome in run_stages(jobs, stages, depth):
        exam, path, split = outcome.item
        if outcome.error is not None:
            exc = outcome.error
            reason = exc.reason if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            in_hash = None
            failed(exam, path, reason, in_hash)
        else:
            in_hash, skipped, res, files = outcome.value
            finish(exam, path, split, res, skipped, files, in_hash)
        tick()
