"""Running the labelling on an existing Dask cluster (``--scheduler`` / ``--scheduler-file``).

Workers read, decode and label batches of files and send back only the small box tables; the
client writes the files in completion order, so OUT only has to exist where ``convert`` runs.
For GPU nodes start the workers with dask-cuda (``dask cuda worker`` or ``LocalCUDACluster``:
one worker per GPU, CUDA_VISIBLE_DEVICES set for each) and pass ``--backend gpu``.  Tasks are
retried when a worker is lost; a bad file fails alone, not its batch.
"""

from __future__ import annotations

from typing import Iterator

from gpuconv.conversion.exam_unit import (ExamJob, ExamOutcome, failure_reason, run_exam,
                                          worker_backend, write_step)
from gpuconv.errors import InputError


def label_batch(batch: list[ExamJob], opts, skip_hash: dict) -> list[ExamOutcome]:
    """Runs on a Dask worker: the exam unit (no files written) for each job of ``batch``."""
    from gpuconv.conversion.malloc_tuning import reuse_freed_memory
    reuse_freed_memory()
    backend = worker_backend(opts.backend)
    return [run_exam(job, opts, backend, skip_hash=skip_hash.get(job.exam)) for job in batch]


def connect(scheduler: str | None = None, scheduler_file=None):
    try:
        from distributed import Client
    except ImportError:
        raise InputError("a Dask scheduler needs Dask: pip install 'gpuconv[dask]'") from None
    if scheduler_file is not None:
        return Client(scheduler_file=str(scheduler_file))
    return Client(scheduler)


def run_on_dask(jobs: list[ExamJob], skip_hash: dict, opts, writer, *, scheduler=None,
                scheduler_file=None, batch_size: int = 4,
                stop=None) -> Iterator[ExamOutcome]:
    """One ExamOutcome per job; each exam's files are written here, on the client.  After
    ``stop`` is set, the tasks not yet finished are cancelled."""
    from distributed import as_completed

    batches = [jobs[i: i + max(1, batch_size)] for i in range(0, len(jobs), max(1, batch_size))]
    client = connect(scheduler, scheduler_file)
    try:
        futures = [client.submit(label_batch, b, opts,
                                 {j.exam: skip_hash[j.exam] for j in b if j.exam in skip_hash},
                                 retries=2, pure=False) for b in batches]
        for fut, results in as_completed(futures, with_results=True, raise_errors=False):
            if stop is not None and stop.is_set():
                client.cancel([f for f in futures if not f.done()])
                break
            if fut.status == "error":
                reason = f"Dask task failed: {fut.exception()}"
                for job in batches[futures.index(fut)]:
                    yield ExamOutcome(job, "failed", reason=reason)
                continue
            for outcome in results:
                if outcome.status == "ok":
                    try:
                        outcome.files = write_step(outcome.job, outcome.result, writer)
                    except Exception as exc:  # noqa: BLE001 - this exam fails alone
                        outcome = ExamOutcome(outcome.job, "failed", outcome.in_hash,
                                              reason=failure_reason(exc, "write"))
                yield outcome
    finally:
        client.close()
