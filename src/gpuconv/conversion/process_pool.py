"""Converting on local worker processes (``convert --pool process``).

Threads share one interpreter.  libdeflate and the Numba kernels release the GIL, but writing
one small label file per slice, building box tables and dispatching kernels are Python, and
they take turns on the GIL: on the 16-core H100 machine, 16 threads converted only 1.05-1.4x
faster than one (three runs).  Worker processes share no GIL.  Each one runs the exam unit
(read, decode, label) and also writes its exams' files (no two exams share a path), then sends
back only the small result the manifest and summary need.

Workers start through 'forkserver': a server process imports gpuconv once and forks each worker
from that clean state, so no worker inherits the parent's threads, locks or CUDA context (a
CUDA context does not survive a fork), and starting 16 workers costs one import, not 16.
Each worker with ``--backend gpu`` makes its own CUDA context and stream.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Iterator

from gpuconv.conversion.exam_unit import ExamJob, ExamOutcome, run_exam, worker_backend
from gpuconv.conversion.stages import Interrupts

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
    multiprocessing re-imports it in each new worker: the CLI's click commands in every worker, a
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


def _worker_init(parent_pid: int) -> None:
    """In each worker: Ctrl-C is the parent's to handle (the workers of a foreground run get the
    terminal's SIGINT too, and would each print a traceback), and the worker ends as soon as the
    converting process is gone, even after a SIGKILL.  Without that the workers (children of
    the forkserver, which each hold its keep-alive pipe and both ends of the task queue) wait
    for tasks for ever, and the forkserver with them."""
    import signal
    import threading
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(parent_pid,), daemon=True,
                     name="gpuconv-parent-watch").start()


def _exit_with_parent(parent_pid: int) -> None:
    import os
    import select
    import time
    try:
        fd = os.pidfd_open(parent_pid)          # Linux >= 5.3: readable when the parent exits
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        select.select([fd], [], [])
    else:
        while True:
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                break
            except PermissionError:
                pass
            time.sleep(0.5)
    os._exit(1)


def convert_batch(batch: list[ExamJob], opts, writer, skip_hash: dict) -> list[ExamOutcome]:
    """Runs in a worker: the exam unit, files written here, for each job of ``batch``; the
    results are stripped of what the parent does not need (polygons, 3D instances, header)."""
    from gpuconv.conversion.malloc_tuning import reuse_freed_memory
    reuse_freed_memory()
    backend = worker_backend(opts.backend)
    out = []
    for job in batch:
        outcome = run_exam(job, opts, backend, skip_hash=skip_hash.get(job.exam), writer=writer)
        if outcome.result is not None:
            outcome.result.stripped()
        out.append(outcome)
    return out


def run_on_processes(jobs: list[ExamJob], skip_hash: dict, opts, writer, workers: int,
                     batch_size: int | None = None,
                     stop: threading.Event | None = None) -> Iterator[ExamOutcome]:
    """One ExamOutcome per job, in completion order.  After ``stop`` is set (or Ctrl-C while
    this waits) no new batch starts; the running batches finish and are delivered."""
    stop = stop if stop is not None else threading.Event()
    if batch_size is None:  # a few batches per worker: balance without much per-task overhead
        batch_size = max(1, min(8, len(jobs) // (4 * workers)))
    batches = [jobs[i: i + batch_size] for i in range(0, len(jobs), batch_size)]
    with _main_module_hidden(), ProcessPoolExecutor(
            max_workers=min(workers, len(batches)) or 1, mp_context=_context(),
            initializer=_worker_init, initargs=(os.getpid(),)) as pool:
        futures = {}
        for b in batches:
            exams = {j.exam for j in b}
            fut = pool.submit(convert_batch, b, opts, writer.for_exams(exams),
                              {e: skip_hash[e] for e in exams if e in skip_hash})
            futures[fut] = b
        try:
            yield from _completed(futures, stop)
        finally:  # the consumer stopped early: start no new batch, finish the running ones
            pool.shutdown(wait=True, cancel_futures=True)


def _completed(futures: dict, stop: threading.Event) -> Iterator[ExamOutcome]:
    pending = set(futures)

    def cancel_pending():
        for fut in pending:
            fut.cancel()              # only batches no worker has started

    interrupts = Interrupts(stop, cancel_pending)
    while pending:
        if stop.is_set():
            cancel_pending()
            # a cancelled future is only reported done once the pool's manager thread gets to
            # it, which it never does when the pool broke meanwhile: drop them here
            pending = {f for f in pending if not f.cancelled()}
            if not pending:
                break
        done, pending = interrupts.call(wait, pending, timeout=0.5, return_when=FIRST_COMPLETED)
        for fut in done:
            if fut.cancelled():
                continue
            try:
                results = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker died: its files fail, not the run
                for job in futures[fut]:
                    yield ExamOutcome(job, "failed", reason=(
                        f"worker process failed ({type(exc).__name__}: {exc})"))
                continue
            yield from results
