"""Converting on threads in one process (``pool='thread'``): the exam unit's steps as stages.

read (threads) -> label (threads; one for the GPU) -> write (threads), with bounded queues
between them (``stages.py``), so decoding, labelling and writing of different exams overlap
while at most ``depth`` decoded volumes wait.  The decoders (libdeflate) and the Numba kernels
release the GIL, so the threads run the heavy parts in parallel.
"""

from __future__ import annotations

import threading
from typing import Iterator

from gpuconv.conversion.exam_unit import (ExamJob, ExamOutcome, LabelOptions, failure_reason,
                                          label_step, read_step, write_step)
from gpuconv.conversion.stages import Stage, run_stages


def run_on_threads(jobs: list[ExamJob], headers: dict, skip_hash: dict, opts: LabelOptions,
                   backend, writer, n_workers: int, depth: int,
                   stop: threading.Event | None = None) -> Iterator[ExamOutcome]:
    """One ExamOutcome per job, in completion order; after ``stop`` is set (or Ctrl-C) only the
    exams being written are finished."""

    def read(job, _):
        return read_step(job, headers.get(job.path), skip_hash.get(job.exam))

    def label(job, value):
        return value, (None if value.skipped else label_step(job, value, opts, backend))

    def write(job, value):
        read_value, res = value
        if res is None:
            return read_value.in_hash, None, []
        return read_value.in_hash, res, write_step(job, res, writer)

    label_threads = n_workers if getattr(backend, "name", "cpu") == "cpu" else 1
    # as many writers as workers: writing small files waits on the disk with the GIL released
    # (2 writers instead of 1 cut a 2-worker run on the build VM's disk by ~12%)
    stages = [Stage("read", read, n_workers), Stage("label", label, label_threads),
              Stage("write", write, n_workers)]
    for outcome in run_stages(jobs, stages, depth, stop):
        job = outcome.item
        if outcome.error is not None:
            yield ExamOutcome(job, "failed", None,
                              reason=failure_reason(outcome.error, outcome.stage))
            continue
        in_hash, res, files = outcome.value
        if res is None:
            yield ExamOutcome(job, "skipped", in_hash)
        else:
            yield ExamOutcome(job, "ok", in_hash, res, files)
