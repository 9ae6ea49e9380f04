"""Converting on local worker processes (``convert --pool process``).

Threads share one interpreter.  libdeflate and the Numba kernels release the GIL, but writing
one small label file per slice, building box tables and dispatching kernels are Python, and
they take turns on the GIL: on the 16-core H100 machine, 16 threads converted only 1.05-1.4x
faster than one (three runs).  Worker processes share no GIL.  Each one reads, decodes, labels and also writes its
exams' files (no two exams share a path), then sends back only the small result the manifest
and summary need.

Workers start through 'forkserver': a server process imports gpuconv once and forks each worker
from that clean state, so no worker inherits the parent's threads, locks or CUDA context (a
CUDA context does not survive a fork), and starting 16 workers costs one import, not 16.
Each worker with ``--backend gpu`` makes its own CUDA context and stream.
"""

from __future__ import annotations

import contextlib
import copy
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from gpuconv.errors import InputError

_PRELOAD = ["gpuconv.conversion.worker_preload"]


def _context():
    """forkserver where the platform has it (Linux, macOS); spawn elsewhere (Windows)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(_PRELOAD)
    return ctx


@contextlib.contextmanager
def _main_module_hidden():
    """Workers need nothing from ``__main__`` (all they run lives in gpuconv), but
    multiprocessing re-imports it in each new worker: the CLI's typer app in every worker, a
    crash for ``python - <script`` ('<stdin>' is no file), and a script without an
    ``if __name__ == "__main__"`` guard would convert again in each worker.  Hiding the main
    module's spec and file while the pool starts its workers stops that."""
    main = sys.modules.get("__main__")
    saved = {a: main.__dict__[a] for a in ("__spec__", "__file__") if a in main.__dict__}
    try:
        main.__spec__ = None
        main.__dict__.pop("__file__", None)
        yield
    finally:
        main.__dict__.update(saved)
        if "__spec__" not in saved:
            main.__dict__.pop("__spec__", None)


def _writer_for(writer, exams: set[str]):
    """A copy of ``writer`` whose index of files from an earlier run holds only ``exams``: the
    whole index would be pickled with every batch."""
    w = copy.copy(writer)
    for attr in ("dirs", "image_dirs"):
        dirs = getattr(w, attr, None)
        if dirs is not None and getattr(dirs, "existing", None) is not None:
            d = copy.copy(dirs)
            d.existing = {e: p for e, p in dirs.existing.items() if e in exams}
            setattr(w, attr, d)
    return w


def convert_batch(batch, opts, writer, expected_hashes: dict) -> list[tuple]:
    """Runs in a worker: label and write each (exam, path, split) of ``batch``.

    Returns [(exam, in_hash, 'skip' | 'error: reason' | ExamResult, files)], the ExamResult
    stripped of what the parent does not need (polygons, 3D instances, header)."""
    from gpuconv.conversion.dask_executor import label_batch
    out = []
    for (exam, in_hash, value), (_, _, split) in zip(
            label_batch(batch, opts, expected_hashes), batch):
        if isinstance(value, str):
            out.append((exam, in_hash, value, []))
            continue
        t0 = time.perf_counter()
        try:
            files = writer.write(value, split)
        except InputError as exc:
            out.append((exam, in_hash, f"error: {exc.reason}", []))
            continue
        except OSError as exc:
            out.append((exam, in_hash, f"error: cannot write output ({exc})", []))
            continue
        value.timings["write"] = time.perf_counter() - t0
        value.polygons = value.instances = value.header = None
        out.append((exam, in_hash, value, files))
    return out


def run_on_processes(jobs, opts, writer, manifest, opt_hash, out, workers: int,
                     batch_size: int | None = None):
    """Yield (exam, path, split, in_hash, skipped_record, ExamResult, files, error) per job,
    in completion order."""
    expected = {}
    for exam, _path, _split in jobs:
        rec = manifest.entries.get(exam)
        if rec and manifest.is_done(exam, rec.get("input_hash"), opt_hash[exam], out):
            expected[exam] = rec["input_hash"]
    if batch_size is None:  # a few batches per worker: balance without much per-task overhead
        batch_size = max(1, min(8, len(jobs) // (4 * workers)))
    batches = [jobs[i: i + batch_size] for i in range(0, len(jobs), batch_size)]
    by_exam = {exam: (path, split) for exam, path, split in jobs}
    with _main_module_hidden(), ProcessPoolExecutor(
            max_workers=min(workers, len(batches)) or 1, mp_context=_context()) as pool:
        futures = {}
        for b in batches:
            exams = {e for e, _, _ in b}
            fut = pool.submit(convert_batch, [(e, str(p), s) for e, p, s in b], opts,
                              _writer_for(writer, exams),
                              {e: expected[e] for e in exams if e in expected})
            futures[fut] = b
        for fut in as_completed(futures):
            try:
                results = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker died: its files fail, not the run
                for exam, path, split in futures[fut]:
                    yield exam, path, split, None, None, None, [], (
                        f"worker process failed ({type(exc).__name__}: {exc})")
                continue
            for exam, in_hash, value, files in results:
                path, split = by_exam[exam]
                if isinstance(value, str) and value == "skip":
                    yield exam, path, split, in_hash, manifest.entries[exam], None, [], None
                elif isinstance(value, str):
                    yield exam, path, split, in_hash, None, None, [], value[len("error: "):]
                else:
                    yield exam, path, split, in_hash, None, value, files, None
