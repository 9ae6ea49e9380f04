"""``convert``: the end-to-end job.

options (``options.py``, validated once) -> plan (inputs, header pre-pass, classes, split) ->
per exam the unit of work of ``exam_unit.py`` (read -> label -> write), run by one executor:
threads with bounded queues (``thread_pool.py``), local worker processes (``process_pool.py``)
or a Dask cluster (``dask_executor.py``), each yielding one ``ExamOutcome`` per exam ->
the manifest, dataset.yaml, tables and summary.json (``RunRecord`` below).

Per-file work is isolated: a bad file is recorded with a one-line reason and the others still
convert.  Problems that would make the whole output wrong (duplicate exam ids, an unreadable
split or classes file) stop the run before anything is written.  Finished exams are recorded in
OUT/manifest.jsonl, so an interrupted run resumes where it stopped (``force=True`` redoes all).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import threading
import time
from pathlib import Path

from gpuconv import __version__
from gpuconv.backends import backend_from, gpu_unavailable_reason
from gpuconv.conversion.exam_unit import ExamJob, ExamOutcome, LabelOptions
from gpuconv.conversion.exam_writer import ExamWriter
from gpuconv.conversion.manifest import Manifest, options_hash
from gpuconv.conversion.malloc_tuning import reuse_freed_memory
from gpuconv.conversion.options import ConvertOptions, choose_execution
from gpuconv.conversion.output_lock import OutputLock, prepare_output
from gpuconv.dataset.exams import exam_id
from gpuconv.dataset.plan import expand_inputs, plan_run
from gpuconv.errors import InputError, OptionError
from gpuconv.writers.atomic import remove_stale_temps, write_text_atomic
from gpuconv.writers.table import BOX_TABLE_PARTS, merge_parts
from gpuconv.dataset.exams import split_counts, split_note
from gpuconv.writers.yolo import write_dataset_yaml

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


def convert(inputs, out, options: ConvertOptions | None = None, *, progress: bool | None = None,
            on_error=None, **settings) -> dict:
    """Convert label volumes to an Ultralytics dataset in ``out``; returns the summary dict.

    Settings are the fields of :class:`ConvertOptions`, given as ``options`` or as keywords
    (keywords override ``options``):
    ``workers``: threads or processes for reading/decoding, labelling and writing (default: all
    cores); ``pool``: 'process' (each worker a process; no shared GIL, see process_pool.py),
    'thread' (one process, staged threads; ``queue`` decoded volumes may wait between stages,
    default 2 x workers) or 'auto' (processes for the CPU backend with >= 4 workers and at
    least ``PROCESS_MIN_FILES_PER_WORKER`` files per worker, where their start-up pays off).
    'hybrid': worker processes read, decode and write, one labeller process owns the backend
    (hybrid_pool.py; never chosen by auto).
    ``scheduler``/``scheduler_file``: run labelling on an existing Dask cluster instead.
    ``images``: CT inputs written as PNG slices (see docs/datasets.md) with HU ``window`` (a
    preset or 'C,W'; three joined by '+' or ``channels3`` for RGB), every slice or, with
    ``background_fraction``, the labelled ones plus that share of the others.
    ``compat='coca'``: the labels of the COCA repository's nrrd_to_yolo.py (``compat_coca.py``).
    ``on_error(path, reason)`` is called for each failed file (the CLI prints it as one line);
    ``progress``: a progress bar on stderr (default: when stderr is a terminal).
    Raises InputError (OptionError for a bad setting) for problems that stop the whole run
    before anything is written.
    """
    if options is None:
        opts = ConvertOptions(**settings)
    else:
        opts = dataclasses.replace(options, **settings) if settings else options
    return _convert(inputs, Path(out), opts, progress, on_error)


class RunRecord:
    """What a run has done so far: manifest records per exam, stage times, progress."""

    def __init__(self, manifest: Manifest, opt_hash: dict, fail, n_jobs: int, progress,
                 writer: ExamWriter):
        self.manifest = manifest
        self.writer = writer
        self.opt_hash = opt_hash
        self.fail = fail
        self.records: dict[str, dict] = {}
        self.stage_seconds = {"read": 0.0, "label": 0.0, "boxes": 0.0, "write": 0.0}
        self.started = time.perf_counter()
        self.done = 0
        self.prog = _progress(n_jobs, progress)

    def add(self, o: ExamOutcome) -> None:
        job = o.job
        if o.status == "failed":
            # a re-run in which this exam now fails: its earlier outputs go, so the folder
            # always equals what a fresh run would write
            prev = self.manifest.entries.get(job.exam) or {}
            self.writer.remove_outputs(job.exam, prev.get("files") or [])
            self.fail(job.path, o.reason)
            self.manifest.record({"exam": job.exam, "file": str(job.path), "status": "failed",
                                  "reason": o.reason, "input_hash": o.in_hash})
        elif o.status == "skipped":
            self.records[job.exam] = {**self.manifest.entries[job.exam], "skipped": True}
        else:
            b = o.result.boxes
            per_class: dict[int, int] = {}
            for c in b.cls.tolist():
                per_class[c] = per_class.get(c, 0) + 1
            rec = {"exam": job.exam, "file": str(job.path), "split": job.split, "status": "ok",
                   "input_hash": o.in_hash, "options_hash": self.opt_hash[job.exam],
                   "files": o.files, "slices": b.slices,
                   "slices_with_boxes": len(set(b.k.tolist())), "boxes": len(b),
                   "boxes_per_class": {str(c): n for c, n in sorted(per_class.items())},
                   "max_plain_value": o.result.max_plain_value}
            self.manifest.record(rec)
            self.records[job.exam] = rec
            for k, v in o.result.timings.items():
                self.stage_seconds[k] = self.stage_seconds.get(k, 0.0) + v
        self.done += 1
        if self.prog:
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            self.prog.update(0, advance=1, rate=f"{rate:.1f} files/s")


def _skip_hashes(manifest: Manifest, jobs: list[ExamJob], opt_hash: dict, out: Path) -> dict:
    """exam -> the input hash that lets it be skipped (its recorded run is complete and had the
    same options); an exam is skipped when its file still hashes to that."""
    skip = {}
    for j in jobs:
        rec = manifest.entries.get(j.exam)
        if rec and manifest.is_done(j.exam, rec.get("input_hash"), opt_hash[j.exam], out):
            skip[j.exam] = rec["input_hash"]
    return skip


def _convert(inputs, out: Path, opts: ConvertOptions, progress, on_error) -> dict:
    started = time.perf_counter()
    reuse_freed_memory()  # 5x faster decoding of volumes > 32 MiB (see malloc_tuning.py)
    paths = expand_inputs(inputs)
    if not paths:
        raise InputError("no input files found")
    if opts.compat is not None:
        from gpuconv.writers.compat_coca import convert_coca
        return convert_coca(paths, out, split_csv=opts.split_csv, val_fraction=opts.val_fraction,
                            seed=opts.seed, on_error=on_error)
    plan = plan_run(paths, classes=opts.classes, single_class=opts.single_class,
                    split_csv=opts.split_csv, val_fraction=opts.val_fraction, seed=opts.seed,
                    on_error=on_error, max_classes=opts.max_classes)
    if opts.distributed:   # the Dask workers resolve the backend themselves (GPU nodes)
        backend, be, pool_used, why = opts.backend, None, "dask", None
    else:
        backend, pool_used, why = choose_execution(opts.backend, opts.pool, opts.n_workers,
                                                   len(plan.headers), gpu_unavailable_reason)
        be = _parent_backend(backend, pool_used)
    image_job, ref_sizes, ct_stamp = _plan_images(opts, plan.headers, be, plan.fail)

    prepare_output(out)
    with OutputLock(out):
        return _convert_locked(out, opts, plan, image_job, ref_sizes, ct_stamp, be,
                               (pool_used, why, backend), progress, started)


class _BackendName:
    """The parent's stand-in for a backend that only worker processes run (its name)."""

    def __init__(self, name: str):
        self.name = name


def _parent_backend(backend, pool_used: str):
    """What the parent process holds of the chosen backend: the backend itself with threads
    (the parent labels); with worker processes only its name, so the parent makes no CUDA
    context of its own (a GPU that cannot run is still refused here, before anything starts)."""
    if pool_used == "thread" or not isinstance(backend, str):
        return backend_from(backend)
    if backend == "gpu":
        reason = gpu_unavailable_reason()
        if reason is not None:
            raise OptionError("backend", f"'gpu' cannot run here: {reason}")
    return _BackendName(backend)


def _convert_locked(out: Path, opts: ConvertOptions, plan, image_job, ref_sizes, ct_stamp, be,
                    execution: tuple, progress, started: float) -> dict:
    pool_used, why, backend = execution
    formats = opts.formats
    headers, class_map, split_of = plan.headers, plan.class_map, plan.split_of
    remove_stale_temps(out)
    manifest = Manifest(out, reset=opts.force)
    common = {"gpuconv": __version__, "connectivity": opts.connectivity,
              "classes": class_map.names, "single_class": opts.single_class,
              "value_named": class_map.value_named, "write_empty": opts.write_empty,
              "formats": formats, "instances": opts.connectivity3d if opts.instances else None}
    if image_job is not None:
        common["images"] = {"windows": [str(w) for w in image_job[1].windows],
                            "background_fraction": opts.background_fraction, "seed": opts.seed}
    jobs = [ExamJob(exam_id(p), p, split_of[exam_id(p)], headers[p])
            for p in sorted(headers, key=exam_id)]
    opt_hash = {j.exam: options_hash({**common, "split": j.split, **ct_stamp.get(j.exam, {})})
                for j in jobs}
    writer = ExamWriter(out, class_map.names, formats, opts.write_empty, image_job)
    # the backend chosen above, not the one asked for: 'auto' resolved once, for every worker
    label_opts = LabelOptions(class_map, opts.connectivity, backend, "polygons" in formats,
                              ref_sizes, opts.instances, opts.connectivity3d)
    n_workers = opts.n_workers
    skip = {} if opts.force else _skip_hashes(manifest, jobs, opt_hash, out)
    run = RunRecord(manifest, opt_hash, plan.fail, len(jobs), progress, writer)
    stop = threading.Event()  # Ctrl-C: no new exam starts; what is running finishes, recorded
    if pool_used == "dask":
        from gpuconv.conversion.dask_executor import run_on_dask
        outcomes = run_on_dask(jobs, skip, label_opts, writer, scheduler=opts.scheduler,
                               scheduler_file=opts.scheduler_file, batch_size=opts.batch_size,
                               stop=stop)
    elif pool_used == "process":
        from gpuconv.conversion.process_pool import run_on_processes
        outcomes = run_on_processes(jobs, skip, label_opts, writer, n_workers, stop=stop)
    elif pool_used == "hybrid":
        from gpuconv.conversion.hybrid_pool import run_on_hybrid
        outcomes = run_on_hybrid(jobs, skip, label_opts, writer, n_workers, stop=stop)
    else:
        from gpuconv.conversion.thread_pool import run_on_threads
        outcomes = run_on_threads(jobs, headers, skip, label_opts, be, writer, n_workers,
                                  opts.depth, stop)
    if run.prog:
        run.prog.start()
    try:
        try:
            for outcome in outcomes:
                run.add(outcome)
        except KeyboardInterrupt:
            stop.set()
            for outcome in outcomes:  # the executor delivers what was already running
                run.add(outcome)
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
        outcomes.close()
    except OSError as exc:  # the manifest cannot be written (a full disk): the run cannot go on
        stop.set()
        outcomes.close()
        raise InputError(f"cannot write to the output folder ({exc.strerror or exc})",
                         out) from None
    finally:
        if run.prog:
            run.prog.stop()
    interrupted = stop.is_set()
    try:
        summary = _finish_run(out, opts, jobs, run, class_map, plan.failures, be, execution[:2],
                              started, {"interrupted": interrupted,
                                        "manifest_damaged_lines": manifest.damaged})
    except OSError as exc:
        raise InputError(f"cannot write the dataset files ({exc.strerror or exc})", out) from None
    return summary


def _finish_run(out: Path, opts: ConvertOptions, jobs, run: RunRecord, class_map, failures,
                be, execution: tuple[str, str | None], started: float, extra: dict) -> dict:
    """Whole-run outputs: dataset.yaml, merged tables, summary.json."""
    pool_used, why = execution
    formats = opts.formats
    records = run.records
    ok = [records[j.exam] for j in jobs if j.exam in records]
    max_plain = max([r.get("max_plain_value", 0) for r in ok] or [0])
    names = class_map.final_names(max_plain)
    splits = split_counts([r["split"] for r in ok])     # train, val (+ test when there is one)
    yaml_path = write_dataset_yaml(out, names, splits)
    tables: list[Path] = []
    if "table" in formats:
        tables += merge_parts(out, "boxes", [r["exam"] for r in ok], BOX_TABLE_PARTS)
    if opts.instances:
        from gpuconv.results.instances import merge_instances_parts
        tables += merge_instances_parts(out, [r["exam"] for r in ok])
    per_class = [0] * len(names)
    for r in ok:
        for c, n in r["boxes_per_class"].items():
            if int(c) < len(names):
                per_class[int(c)] += n
    failures.sort(key=lambda f: f["file"])
    seconds = time.perf_counter() - started
    stage_seconds = run.stage_seconds
    busy = sum(stage_seconds.values()) or 1.0
    backend = str(opts.backend)
    summary = {
        "gpuconv": __version__,
        "backend": "dask" if opts.distributed else be.name,
        "backend_requested": backend,
        "gpu_unavailable": (gpu_unavailable_reason() if backend == "auto"
                            and not opts.distributed and be.name != "gpu" else None),
        "out": str(out.resolve()),
        "dataset_yaml": str(yaml_path.resolve()),
        "tables": [p.relative_to(out).as_posix() for p in tables],
        "connectivity": opts.connectivity,
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
        "split_note": split_note(splits, opts.split_csv),
        "boxes_per_class": {n: per_class[i] for i, n in enumerate(names)},
        "failed": len(failures),
        "failures": failures,
        "workers": opts.n_workers,
        "pool": pool_used,
        "auto_choice": why,
        "seconds": round(seconds, 4),
        "files_per_second": round(len(ok) / seconds, 2) if seconds > 0 else None,
        "stage_seconds": {k: round(v, 4) for k, v in stage_seconds.items()},
        "stage_share": {k: round(v / busy, 3) for k, v in stage_seconds.items()},
    }
    summary.update(extra)
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _plan_images(opts: ConvertOptions, headers, be, fail):
    """``--images``: match each label file to its CT (a file without one fails), read the CT
    sizes (the reference for cropped label grids) and the image options.  Returns
    (image job or None, exam -> CT sizes, exam -> manifest stamp of the CT file)."""
    images = opts.images
    if not images:
        return None, {}, {}
    from gpuconv.dataset.grid import match_ct, read_ct_header
    from gpuconv.io.formats import ct_stamp, reference_grid  # DICOM folders, SEG placement
    from gpuconv.images.ct_slices import ImageOptions
    from gpuconv.images.windowing import parse_windows
    windows = parse_windows(opts.window, opts.channels3)
    ct_of = match_ct(list(images), list(headers))
    ref_sizes, stamps = {}, {}
    for p in list(headers):
        e = exam_id(p)
        if e not in ct_of:
            fail(p, f"no CT volume with exam id '{e}' among --images")
            del headers[p]
            continue
        try:
            ref_sizes[e] = reference_grid(headers[p], read_ct_header(ct_of[e]))
        except InputError as exc:
            fail(p, f"CT {ct_of[e]}: {exc.reason}")
            del headers[p]
            continue
        stamps[e] = {"ct": ct_stamp(ct_of[e])}
    use_gpu = be is not None and getattr(be, "name", "") == "gpu"
    n = max(1, (opts.workers or os.cpu_count() or 1) // 2)
    return ((ct_of, ImageOptions(windows, opts.background_fraction, opts.seed, use_gpu, n)),
            ref_sizes, stamps)
